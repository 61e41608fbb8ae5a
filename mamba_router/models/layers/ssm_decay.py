"""The state decay rates of an SSM mixer, ``-exp(A_log)`` in float32, kept between decode steps."""

from __future__ import annotations

import torch
from torch import nn


def state_decay(mixer: nn.Module) -> torch.Tensor:
    """``-exp(mixer.A_log)`` in float32.

    With gradients enabled it is computed on every call, on the autograd graph. Without them (inference, decoding)
    it is computed once per value of ``A_log`` (its storage and that storage's version counter) and kept on the
    mixer, so a decode step reads it instead of running three kernels per layer for it (on the H100 about a tenth of
    a 1B model's step). Loading new weights in place, moving or casting the model gives another value, so another
    result.
    """
    a_log = mixer.A_log
    assert isinstance(a_log, torch.Tensor)
    if torch.is_grad_enabled():
        return -torch.exp(a_log.float())
    kept = mixer.__dict__.get("_state_decay")
    if kept is not None:
        source, version, decay = kept
        # ``source`` aliases the storage the value was computed from and keeps it alive, so a new storage can never
        # sit at its address: equal addresses mean the same storage, and the shared version counter says whether it
        # was written since.
        if source.data_ptr() == a_log.data_ptr() and source.dtype == a_log.dtype and version == _version(a_log):
            return decay
    decay = -torch.exp(a_log.float())
    mixer.__dict__["_state_decay"] = (a_log.detach(), _version(a_log), decay)
    return decay


def forget_state_decays(model: nn.Module) -> None:
    """Drop every kept value under ``model``: its weights were written in place where no version counter sees it
    (an inference tensor written in inference mode, as a merged adapter may be)."""
    for module in model.modules():
        module.__dict__.pop("_state_decay", None)


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter; None for an inference tensor, which has none (it cannot be written outside
    inference mode; writes inside it are announced with :func:`forget_state_decays`)."""
    return None if tensor.is_inference() else tensor._version
