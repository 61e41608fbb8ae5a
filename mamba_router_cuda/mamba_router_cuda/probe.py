"""Can the mamba-ssm kernels run here? Decided from facts gathered without importing mamba_ssm or touching CUDA.

:func:`collect_kernel_facts` looks the packages up (``importlib.util.find_spec`` and distribution metadata only);
:func:`assess` turns platform and kernel facts into an :class:`Availability` whose reason names the one thing to
fix first and whose details list every kernel's state. Tests call :func:`assess` with made-up facts.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import importlib.util
import os
import re
from dataclasses import dataclass

from mamba_router.backends.install_hints import distribution_install_command
from mamba_router.backends.reports import MIXERS_DETAIL, Availability, PlatformFacts
from mamba_router.backends.selection import switch_value

FUSED_STEP_ENV = "MAMBA_ROUTER_FUSED_STEP"  # on/off switch of the fused decode step (mamba_router_cuda.fused_step)
# the largest batch the fused step takes (default 1: larger batches measured slower so far); for benchmarks
FUSED_STEP_ROWS_ENV = "MAMBA_ROUTER_FUSED_STEP_ROWS"
MOST_FUSED_ROWS = 64  # the serving engine's largest batch
# on/off: launch the fused step's kernels with programmatic dependent launch (Hopper+); unset: auto (pdl_suits)
PDL_ENV = "MAMBA_ROUTER_PDL"
# auto PDL for models whose layers hold at most this many bytes of weights: measured faster at 130M (Mamba-1 and
# Mamba-2, 7.5 MB a layer: 15-25% less time a token on the H200, 10-17% on the H100) and not at 1.4B (52 MB a layer:
# 1-3% more on the H200); sizes between are not measured, so they stay off
PDL_AUTO_MAX_LAYER_BYTES = 8 << 20

INSTALL_BACKEND = distribution_install_command("mamba-router-cuda", "cuda")  # as the core was installed
INSTALL_MAMBA_SSM = "pip install mamba-ssm --no-build-isolation"
INSTALL_CAUSAL_CONV1D = "pip install 'causal-conv1d>=1.2.0' --no-build-isolation"
INSTALL_CUDA_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cu126"
MIN_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class KernelFacts:
    """Which mamba-ssm pieces are installed, read without importing them."""

    mamba_ssm_version: str | None
    selective_scan_kernel: bool
    causal_conv1d_version: str | None
    causal_conv1d_kernel: bool
    triton_installed: bool
    triton_version: str | None = None
    fused_step_setting: str | None = None  # the MAMBA_ROUTER_FUSED_STEP value, unset None
    fused_step_rows_setting: str | None = None  # the MAMBA_ROUTER_FUSED_STEP_ROWS value, unset None
    pdl_setting: str | None = None  # the MAMBA_ROUTER_PDL value, unset None


def collect_kernel_facts() -> KernelFacts:
    """Look up mamba_ssm, its Mamba-1 kernel, causal_conv1d and triton without importing any of them."""
    triton = _has("triton")
    return KernelFacts(
        mamba_ssm_version=_version("mamba-ssm") if _has("mamba_ssm") else None,
        selective_scan_kernel=_has("selective_scan_cuda"),
        causal_conv1d_version=_version("causal-conv1d") if _has("causal_conv1d") else None,
        causal_conv1d_kernel=_has("causal_conv1d_cuda"),
        triton_installed=triton,
        triton_version=_version("triton") if triton else None,
        fused_step_setting=os.environ.get(FUSED_STEP_ENV),
        fused_step_rows_setting=os.environ.get(FUSED_STEP_ROWS_ENV),
        pdl_setting=os.environ.get(PDL_ENV),
    )


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(distribution: str) -> str:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def assess(platform: PlatformFacts, kernels: KernelFacts) -> Availability:
    """Decide availability; the first blocking problem becomes the reason, every fact goes into details."""
    details = _details(platform, kernels)
    if platform.system not in ("linux", "windows"):
        return _unusable(
            f"real-mamba needs Linux or Windows with an NVIDIA CUDA GPU; this is {platform.system} "
            f"(on macOS the mamba2 backend is the Mamba path)",
            distribution_install_command("mamba-router-mps", "mps") if platform.system == "darwin" else None,
            details,
        )
    if platform.torch_version is None:
        return _unusable(
            "torch is not importable; install a CUDA build of torch", _fix(INSTALL_CUDA_TORCH, kernels), details
        )
    if not platform.torch_cuda_build:
        return _unusable(
            f"torch {platform.torch_version} is a {platform.torch_build}-only build without CUDA; the mamba-ssm "
            "kernels need a CUDA build of torch and an NVIDIA GPU",
            _fix(INSTALL_CUDA_TORCH, kernels),
            details,
        )
    if not platform.cuda_available:
        return _unusable(
            f"torch {platform.torch_version} ({platform.torch_build}) sees no CUDA GPU; check nvidia-smi, the "
            "driver, and CUDA_VISIBLE_DEVICES",
            _fix(None, kernels),
            details,
        )
    capability = _parse_capability(platform.cuda_capability)
    if capability is not None and capability < MIN_CAPABILITY:
        return _unusable(
            f"GPU {platform.cuda_device_name} has compute capability {platform.cuda_capability}; the mamba-ssm "
            f"kernels need {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer",
            None,
            details,
        )
    if kernels.mamba_ssm_version is None:
        return _unusable(
            "mamba-ssm is not installed (the CUDA kernels real-mamba runs on)",
            f"{INSTALL_MAMBA_SSM} && {INSTALL_CAUSAL_CONV1D}",
            details,
        )
    if not kernels.triton_installed:
        return _unusable(
            "triton is not installed; mamba-ssm's Mamba-2 kernels and decoding need it", "pip install triton", details
        )
    mismatch = _build_mismatch(platform, kernels.mamba_ssm_version)
    if mismatch:
        return _unusable(mismatch, f"pip install --force-reinstall {INSTALL_MAMBA_SSM.split(' ', 2)[2]}", details)
    notes = []
    if not kernels.selective_scan_kernel:
        notes.append(
            "mamba-ssm's Mamba-1 kernel selective_scan_cuda is missing, so Mamba-1 checkpoints cannot run "
            f"(Mamba-2 can; reinstall with {INSTALL_MAMBA_SSM})"
        )
    if kernels.causal_conv1d_version is None or not kernels.causal_conv1d_kernel:
        notes.append(f"causal-conv1d is missing, so convolutions take a slower path ({INSTALL_CAUSAL_CONV1D})")
    reason = f"mamba-ssm {kernels.mamba_ssm_version} kernels on {platform.cuda_device_name}"
    return Availability(available=True, reason=reason + ("; " + "; ".join(notes) if notes else ""), details=details)


def _fix(first: str | None, kernels: KernelFacts) -> str | None:
    """The install command for a machine that must first fix ``first``: also installs the kernels if missing."""
    steps = [first] if first else []
    if kernels.mamba_ssm_version is None:
        steps += [INSTALL_MAMBA_SSM, INSTALL_CAUSAL_CONV1D]
    return " && ".join(steps) or None


def _details(platform: PlatformFacts, kernels: KernelFacts) -> dict[str, str]:
    return {
        "mamba_ssm": kernels.mamba_ssm_version or "missing",
        "mamba1_kernel": "present" if kernels.selective_scan_kernel else "missing",
        "mamba2_kernels": "present" if kernels.mamba_ssm_version and kernels.triton_installed else "missing",
        "causal_conv1d": (kernels.causal_conv1d_version or "missing")
        + ("" if kernels.causal_conv1d_kernel or kernels.causal_conv1d_version is None else " (kernel missing)"),
        "torch_build": platform.torch_build,
        "gpu": platform.cuda_device_name or "none",
        "fused_step": fused_step_state(kernels),
        MIXERS_DETAIL: ",".join(_runnable_mixers(kernels)),
    }


def fused_step_state(kernels: KernelFacts) -> str:
    """Whether decoding takes the fused step kernels (one sequence at a time) and, if not, why."""
    setting = kernels.fused_step_setting
    if setting is not None and setting.strip():
        switched = switch_value(setting)
        if switched is None:
            return f"error: {FUSED_STEP_ENV}={setting!r} is not an on/off value (loading a model fails)"
        if not switched:
            return f"off ({FUSED_STEP_ENV}={setting})"
    if not kernels.triton_installed:
        return "off: triton is missing"
    version = kernels.triton_version or "unknown"
    if not triton_runs_fused_step(version):
        if _triton_major(version) is None:
            return f"off: triton's version {version!r} cannot be read (unfused kernels)"
        return f"off: triton {version} is older than 3.0 (unfused kernels)"
    rows = fused_step_rows(kernels.fused_step_rows_setting)
    if rows is None:
        return f"error: {FUSED_STEP_ROWS_ENV}={kernels.fused_step_rows_setting!r} is not a batch size from 1 to {MOST_FUSED_ROWS} (loading a model fails)"
    pdl = kernels.pdl_setting
    mib = PDL_AUTO_MAX_LAYER_BYTES >> 20
    launch = f"; programmatic dependent launch where the GPU runs it, for models of up to {mib} MiB a layer"
    if pdl is not None and pdl.strip():
        switched = switch_value(pdl)
        if switched is None:
            return f"error: {PDL_ENV}={pdl!r} is not an on/off value (loading a model fails)"
        launch = f"; programmatic dependent launch where the GPU runs it ({PDL_ENV}={pdl.strip()})" if switched else ""
    if rows == 1:
        return f"on for one sequence at a time (triton {version}{launch})"
    return f"on for batches of up to {rows} sequences ({FUSED_STEP_ROWS_ENV}={rows}; triton {version}{launch})"


def pdl_suits(layer_weight_bytes: float) -> bool:
    """Auto PDL (``MAMBA_ROUTER_PDL`` unset): on for a model whose layers hold at most
    :data:`PDL_AUTO_MAX_LAYER_BYTES` of weights each, where a step's kernels are short and the time between them
    counts; off for larger ones."""
    return layer_weight_bytes <= PDL_AUTO_MAX_LAYER_BYTES


def fused_step_rows(setting: str | None) -> int | None:
    """The largest batch the fused step takes from ``MAMBA_ROUTER_FUSED_STEP_ROWS`` (1 when unset or blank); None
    for a value that is not a whole number from 1 to :data:`MOST_FUSED_ROWS`."""
    if setting is None or not setting.strip():
        return 1
    digits = setting.strip()
    if not (digits.isascii() and digits.isdigit()):
        return None
    rows = int(digits)
    return rows if 1 <= rows <= MOST_FUSED_ROWS else None


def triton_runs_fused_step(version: str) -> bool:
    """True for triton 3.0 or newer: the fused step uses ``tl.dot``'s input precision, new in 3.0 (mamba-ssm itself
    runs on older ones). A version that cannot be read is not trusted."""
    major = _triton_major(version)
    return major is not None and major >= 3


def _triton_major(version: str) -> int | None:
    found = re.match(r"^(\d+)\.", version)
    return int(found.group(1)) if found else None


def _runnable_mixers(kernels: KernelFacts) -> list[str]:
    """The mixer kinds whose kernels are installed (see mamba_router.models.registry.MIXERS_DETAIL)."""
    mixers = []
    if kernels.selective_scan_kernel:
        mixers.append("mamba1")
    if kernels.mamba_ssm_version and kernels.triton_installed:
        mixers.append("mamba2")
        mixers.append("attention")  # torch's scaled_dot_product_attention, beside the Mamba-2 layers of hybrids
    return mixers


def _parse_capability(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    match = re.match(r"^(\d+)\.(\d+)$", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _build_mismatch(platform: PlatformFacts, mamba_version: str) -> str | None:
    """Prebuilt mamba-ssm wheels carry ``+cu12torch2.4...`` in their version; compare it with the running torch."""
    local = mamba_version.partition("+")[2]
    if not local:
        return None
    torch_match = re.search(r"torch(\d+)\.(\d+)", local)
    cuda_match = re.search(r"cu(\d+)", local)
    running_torch = re.match(r"^(\d+)\.(\d+)", platform.torch_version or "")
    running_cuda = re.match(r"^cuda (\d+)", platform.torch_build)
    if torch_match and running_torch and torch_match.groups() != running_torch.groups():
        return (
            f"mamba-ssm {mamba_version} was built for torch {'.'.join(torch_match.groups())} but torch "
            f"{platform.torch_version} is installed; its kernels will fail to load"
        )
    if cuda_match and running_cuda and not cuda_match.group(1).startswith(running_cuda.group(1)):
        return (
            f"mamba-ssm {mamba_version} was built for CUDA {cuda_match.group(1)} but torch uses "
            f"{platform.torch_build}; its kernels will fail to load"
        )
    return None


def _unusable(reason: str, install_command: str | None, details: dict[str, str]) -> Availability:
    return Availability(available=False, reason=reason, install_command=install_command, details=details)
