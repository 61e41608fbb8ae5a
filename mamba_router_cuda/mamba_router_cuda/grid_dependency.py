"""Programmatic dependent launch (PDL, Hopper and newer) for the fused decode step's kernels.

A decode step is a chain of short kernels, each reading what the one before wrote. Launched with PDL, a kernel's
programs start while the kernel before it is still finishing: they read what no earlier kernel of the step writes
(weights; a layer's SSM state, last written by that layer's previous step) and then wait (``gdc_wait``) until the
kernel before has finished and its writes are visible. Each kernel lets the next one start (``gdc_launch_dependents``)
only after its own wait, so when a kernel starts, every kernel two or more before it has finished: nothing a program
reads before its wait can still change. A kernel launched without PDL waits for the one before as usual.

Triton 3.5+ has the intrinsics; elsewhere they are no-ops and :data:`HAS_GRID_DEPENDENCY` is False (PDL is off).
"""

from __future__ import annotations

import torch
import triton

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_GRID_DEPENDENCY = True
except ImportError:  # an older Triton: no PDL
    HAS_GRID_DEPENDENCY = False

    @triton.jit
    def gdc_wait() -> None:  # type: ignore[no-redef,unused-ignore]
        pass

    @triton.jit
    def gdc_launch_dependents() -> None:  # type: ignore[no-redef,unused-ignore]
        pass


@triton.jit
def wait_then_release() -> None:
    """Wait for the kernel before (its writes are visible after this), then let the next kernel start: PDL's order
    in one place, so no kernel releases the next before its own wait."""
    gdc_wait()
    gdc_launch_dependents()


def device_runs_grid_dependency(device: str | torch.device) -> bool:
    """True where PDL runs: Triton has the intrinsics and the GPU is Hopper (sm_90) or newer."""
    if not HAS_GRID_DEPENDENCY or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(torch.device(device))[0] >= 9


__all__ = ["HAS_GRID_DEPENDENCY", "device_runs_grid_dependency", "wait_then_release"]
