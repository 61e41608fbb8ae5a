"""Typed records (pydantic) shared by detection, backends and the CLI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal["mamba", "transformer"]
FinishReason = Literal["eos", "stop", "length"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlatformFacts(_Record):
    """What this machine offers, gathered cheaply (no kernels launched, no model loaded)."""

    system: str = Field(description="lower-case OS name: linux, darwin, windows, ...")
    machine: str = Field(description="CPU architecture, e.g. x86_64 or arm64")
    python_version: str
    torch_version: str | None = Field(default=None, description="None when torch is not importable")
    torch_build: str = Field(default="missing", description="'cpu', 'cuda 12.4', 'rocm 6.1' or 'missing'")
    cuda_available: bool = False
    cuda_device_name: str | None = None
    cuda_device_count: int = 0
    cuda_capability: str | None = Field(default=None, description="compute capability of device 0, e.g. '9.0'")
    mps_available: bool = False

    @property
    def torch_cuda_build(self) -> bool:
        """True when the installed torch was built with CUDA."""
        return self.torch_build.startswith("cuda")


class Availability(_Record):
    """A backend's answer to ``probe``: can it run here, why (not), and how to install what is missing."""

    available: bool
    reason: str
    install_command: str | None = None
    forceable: bool = Field(
        default=False,
        description="usable when requested explicitly even though it is not chosen automatically",
    )
    details: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def usable(cls, reason: str, **details: str) -> Availability:
        """A backend that can run here."""
        return cls(available=True, reason=reason, details=details)

    @classmethod
    def unusable(
        cls, reason: str, install_command: str | None = None, *, forceable: bool = False, **details: str
    ) -> Availability:
        """A backend that cannot run here, with the fix."""
        return cls(
            available=False,
            reason=reason,
            install_command=install_command,
            forceable=forceable,
            details=details,
        )


class CandidateReport(_Record):
    """One backend as discovery saw it: where it came from, whether it can run, and why."""

    name: str
    distribution: str | None = None
    version: str | None = None
    family: Family | None = None
    priority: int | None = None
    entry_point: str | None = Field(default=None, description="'module:attr' of the entry point")
    installed: bool = True
    available: bool = False
    forceable: bool = False
    reason: str
    install_command: str | None = None
    error: str | None = Field(default=None, description="what went wrong while loading or probing the plugin")
    details: dict[str, str] = Field(default_factory=dict)
    probe_ms: float | None = None


class DetectionResult(_Record):
    """Which backend this machine gets, why, and why every other candidate is or is not usable."""

    platform: PlatformFacts
    candidates: tuple[CandidateReport, ...]
    selected: str | None = Field(default=None, description="the chosen backend's name")
    selected_family: Family | None = None
    reason: str = Field(description="why the selected backend was chosen, or why none could be")
    enable_mamba: bool = True
    forced_backend: str | None = None
    error: str | None = Field(default=None, description="set when selection failed")
    warnings: tuple[str, ...] = ()

    def candidate(self, name: str) -> CandidateReport | None:
        """The report of the first candidate called ``name``, or None."""
        return next((c for c in self.candidates if c.name == name), None)

    @property
    def mamba_backend(self) -> str | None:
        """The selected backend's name when it is a Mamba backend, else None."""
        return self.selected if self.selected_family == "mamba" else None

    def to_text(self) -> str:
        """A plain-text report, one line per candidate."""
        from mamba_router.report import detection_to_text

        return detection_to_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        from mamba_router.report import detection_to_html

        return detection_to_html(self)


class Timings(_Record):
    """Wall-clock timings of one generation, in milliseconds."""

    prefill_ms: float
    decode_ms: float
    total_ms: float
    time_to_first_token_ms: float | None = None
    decode_tokens_per_second: float | None = None


class GenerationResult(_Record):
    """What a loaded model produced for one prompt."""

    text: str
    token_ids: list[int] = Field(default_factory=list, description="generated token ids, EOS included")
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    stop_sequence: str | None = None
    backend: str
    device: str
    model_id: str
    timings: Timings

    def __str__(self) -> str:
        return self.text
