"""The contract between mamba_router and its backends.

A backend is registered by its distribution under the entry-point group ``mamba_router.backends``
(``name = "module:attr"``, where ``attr`` is a class with a no-argument constructor, or an instance).

Contract, in the spirit of one base class whose docstrings are the rules:

- ``name``: stable, lower-case id (``real-mamba``, ``mamba2``, ``transformer``); equal to the entry point's name.
- ``family``: ``"mamba"`` or ``"transformer"``; the router sends long or legal work to the ``mamba`` family.
- ``priority``: a higher number wins among usable backends of one family when the platform rule does not decide.
- ``default_model``: the hub id loaded when the caller names none.
- ``install_command``: the exact command that installs this backend.
- ``probe(platform)``: cheap (no model load, no kernel launch), never raises, and returns an
  :class:`~mamba_router.backends.reports.Availability` that keeps the *reason* a backend cannot run and the fix.
  Discovery survives a probe that raises or hangs anyway, and reports it.
- ``load(model, device=..., dtype=...)``: returns a :class:`~mamba_router.generation.protocols.LoadedModel`; raises a
  :class:`~mamba_router.errors.MambaRouterError` subclass naming what went wrong. What else a loaded model can do
  (read a document once and answer many questions, train LoRA adapters) it declares through the capability
  protocols in :mod:`mamba_router.generation.protocols`.
- ``write_offline_model(directory)``: writes a tiny random-weight model in the backend's own checkpoint format, with
  a tokenizer, so demos and tests run with no network. The output of such a model is meaningless.

A Mamba backend needs no model code of its own: the model families in :mod:`mamba_router.models` are written once
against the ops interface (:class:`~mamba_router.models.ops.SSMOps`), and a backend supplies the ops (and, if it
likes, its own decoding loop, as ``real-mamba`` does with CUDA graphs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mamba_router.backends.reports import Availability, Family, PlatformFacts

if TYPE_CHECKING:  # a type-only reference up the layers: the contract names what load() returns
    import torch

    from mamba_router.generation.protocols import LoadedModel


@runtime_checkable
class Backend(Protocol):
    """A way to run a language model on some platform. See the module docstring for the contract."""

    name: str
    family: Family
    priority: int
    default_model: str
    install_command: str

    def probe(self, platform: PlatformFacts) -> Availability:
        """Whether this backend can run on ``platform``; cheap, never raises."""
        ...

    def load(self, model: str, *, device: str | None = None, dtype: str | torch.dtype | None = None) -> LoadedModel:
        """Load ``model`` (a hub id or a local directory) and return it ready to generate."""
        ...

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight model with its tokenizer into ``directory``; return the model path."""
        ...
