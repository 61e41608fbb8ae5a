"""What detection found, as typed records (pydantic): the platform, each backend's availability, and the choice.

Each record renders itself as plain text (``str``) and as HTML (``_repr_html_``, for notebooks); the CLI builds its
rich output from the same one-line views (:meth:`PlatformFacts.summary`, :attr:`CandidateReport.status`,
:meth:`DetectionResult.choice_line`).
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal["mamba", "transformer"]
CandidateStatus = Literal["usable", "forceable", "broken", "not installed", "unusable"]
DetectionSource = Literal["probed", "process cache", "disk cache", "given"]
MIXERS_DETAIL = "mixers"  # a Mamba backend's details key: the mixer kinds it can run here, comma-separated


def detection_source_line(source: DetectionSource, elapsed_ms: float | None) -> str:
    """How a detection's candidates were found, and in how long: one line for reports and the CLI."""
    took = f"in {elapsed_ms:,.1f} ms: " if elapsed_ms is not None else ""
    how = {
        "probed": "probed every backend (later runs reuse this while the machine is unchanged)",
        "process cache": "reused this process's detection",
        "disk cache": "an earlier run's detection, the machine unchanged since (`mamba-router info` probes again)",
        "given": "probed the backends given by the caller",
    }[source]
    return took + how


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
    cuda_error: str | None = Field(default=None, description="why asking torch about CUDA failed, if it did")

    @property
    def torch_cuda_build(self) -> bool:
        """True when the installed torch was built with CUDA."""
        return self.torch_build.startswith("cuda")

    def summary(self) -> str:
        """One line describing the machine."""
        torch_part = (
            f"torch {self.torch_version} ({self.torch_build} build)" if self.torch_version else "torch not importable"
        )
        cuda = f"yes, {self.cuda_device_count} x {self.cuda_device_name}" if self.cuda_available else "no"
        if self.cuda_error:
            cuda += f" (the CUDA query failed: {self.cuda_error})"
        return (
            f"{self.system} {self.machine}, Python {self.python_version}, {torch_part}; "
            f"CUDA: {cuda}; MPS: {'yes' if self.mps_available else 'no'}"
        )


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
    default_model: str | None = Field(default=None, description="the model the backend loads when none is named")
    installed: bool = True
    available: bool = False
    forceable: bool = False
    reason: str
    install_command: str | None = None
    error: str | None = Field(default=None, description="what went wrong while loading or probing the plugin")
    details: dict[str, str] = Field(default_factory=dict)
    probe_ms: float | None = None

    @property
    def status(self) -> CandidateStatus:
        """usable / forceable / broken / not installed / unusable."""
        if not self.installed:
            return "not installed"
        if self.error:
            return "broken"
        if self.available:
            return "usable"
        return "forceable" if self.forceable else "unusable"

    @property
    def origin(self) -> str:
        """The distribution and version it came from."""
        return f"{self.distribution or '?'} {self.version or ''}".strip()


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
    source: DetectionSource = Field(
        default="probed",
        description="probed: every backend was probed now; process cache / disk cache: an earlier detection on this "
        "unchanged machine (in this process, or stored by an earlier one); given: backends handed in by the caller",
    )
    detect_ms: float | None = Field(default=None, description="what finding the backends took, choosing aside")

    def source_line(self) -> str:
        """How the candidates were found and what it took."""
        return detection_source_line(self.source, self.detect_ms)

    def candidate(self, name: str) -> CandidateReport | None:
        """The report of the first candidate called ``name``, or None."""
        return next((c for c in self.candidates if c.name == name), None)

    @property
    def mamba_backend(self) -> str | None:
        """The selected backend's name when it is a Mamba backend, else None."""
        return self.selected if self.selected_family == "mamba" else None

    def switches_line(self) -> str:
        """The user's switches as they were read."""
        return (
            f"ENABLE_MAMBA={'true' if self.enable_mamba else 'false'}, "
            f"MAMBA_ROUTER_BACKEND={self.forced_backend or 'auto'}"
        )

    def choice_line(self) -> str:
        """The chosen backend and why, or the error."""
        if self.selected is None:
            return f"no backend chosen: {self.error or self.reason}"
        return f"{self.selected} ({self.selected_family}): {self.reason}"

    def to_text(self) -> str:
        """A plain-text report: platform, switches, one block per candidate, the choice."""
        lines = [
            f"platform : {self.platform.summary()}",
            f"switches : {self.switches_line()}",
            f"chosen   : {self.choice_line()}",
            f"detected : {self.source_line()}",
            "candidates:",
        ]
        for c in self.candidates:
            lines.append(f"  - {c.name} [{c.family or '?'}] from {c.origin}: {c.status}")
            lines.append(f"      why: {c.reason}")
            if c.install_command and not c.available:
                lines.append(f"      fix: {c.install_command}")
        lines.extend(f"warning  : {w}" for w in self.warnings)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            "<tr>"
            f"<td><b>{esc(c.name)}</b></td><td>{esc(c.family or '?')}</td><td>{esc(c.origin)}</td>"
            f"<td>{esc(c.status)}</td><td>{esc(c.reason)}</td>"
            f"<td><code>{esc(c.install_command or '') if not c.available else ''}</code></td>"
            "</tr>"
            for c in self.candidates
        )
        return (
            f"<div><p><b>Chosen:</b> {esc(self.choice_line())}<br>"
            f"<b>Platform:</b> {esc(self.platform.summary())}</p>"
            "<table><thead><tr><th>backend</th><th>family</th><th>distribution</th><th>status</th>"
            f"<th>reason</th><th>install</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
