"""Dependencies stay quiet inside the library: transformers' progress bars ("Loading weights", "Writing model
shards") are off while a model is read or written, unless mamba_router's logger is at DEBUG (``-v -v``, or
``logging.getLogger("mamba_router").setLevel(logging.DEBUG)``). What was on before is put back afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Progress bars of transformers off for the duration (unless DEBUG logging is on for mamba_router)."""
    if logging.getLogger("mamba_router").isEnabledFor(logging.DEBUG):
        yield
        return
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
