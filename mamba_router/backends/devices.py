"""Pick a torch device and dtype from a request ("auto", "cuda:1", "bf16", ...) and what the machine has."""

from __future__ import annotations

import torch

from mamba_router.errors import InvalidRequestError

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if present, else MPS, else CPU; an explicit device must exist here."""
    if requested is None or (isinstance(requested, str) and requested.strip().lower() in ("", "auto")):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested.strip().lower() if isinstance(requested, str) else requested)
    except (RuntimeError, TypeError) as exc:
        raise InvalidRequestError(
            f"device {requested!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidRequestError(f"device {requested!r} asked for CUDA, but this torch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidRequestError(
                f"device {requested!r} does not exist: {torch.cuda.device_count()} CUDA device(s) present"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidRequestError(f"device {requested!r} asked for MPS, which is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidRequestError(f"device {requested!r} is not supported; use 'cpu', 'cuda' or 'mps'")
    return device


def resolve_dtype(requested: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` -> bfloat16 on CUDA (float16 where bf16 is unsupported), float16 on MPS, float32 on CPU."""
    if isinstance(requested, torch.dtype):
        if requested not in _DTYPE_NAMES.values():
            raise InvalidRequestError(f"dtype {requested} is not supported; use float32, bfloat16 or float16")
        return requested
    if requested is None or requested.strip().lower() in ("", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    name = requested.strip().lower().removeprefix("torch.")
    if name not in _DTYPE_NAMES:
        raise InvalidRequestError(f"dtype {requested!r} is not known; use one of {', '.join(sorted(_DTYPE_NAMES))}")
    return _DTYPE_NAMES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'``."""
    return str(dtype).removeprefix("torch.")
