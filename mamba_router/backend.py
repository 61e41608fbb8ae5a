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
  :class:`~mamba_router.records.Availability` that keeps the *reason* a backend cannot run and the fix.
  Discovery survives a probe that raises or hangs anyway, and reports it.
- ``load(model, device=..., dtype=...)``: returns a :class:`LoadedModel`; raises a
  :class:`~mamba_router.errors.MambaRouterError` subclass naming what went wrong.
- Loaded models built on :class:`~mamba_router.loaded_model.TokenizerModel` get ``read(document)`` /
  ``ask(state, question)`` (read once, ask many) by implementing ``_read_state`` and ``_stepper_from_state``.
- ``write_offline_model(directory)``: writes a tiny random-weight model in the backend's own checkpoint format, with
  a tokenizer, so demos and tests run with no network. The output of such a model is meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mamba_router.records import Availability, Family, GenerationResult, PlatformFacts

if TYPE_CHECKING:
    from mamba_router.decoding import GenerationStream


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to count tokens and generate, whichever backend loaded it."""

    backend: str
    device: str
    model_id: str
    available: bool
    reason: str

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes for this model's tokenizer (no special tokens added)."""
        ...

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        stream: bool = False,
    ) -> GenerationResult | GenerationStream:
        """Continue ``prompt``. Temperature 0 is greedy. With ``stream=True`` returns an iterator of text pieces."""
        ...

    def generate_with_state_space(
        self, prompt: str, context: str | None = None, max_new_tokens: int = 256, **kwargs: object
    ) -> GenerationResult | GenerationStream:
        """Answer ``prompt`` about ``context``: the context is read first, the question after it."""
        ...


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

    def load(self, model: str, *, device: str | None = None, dtype: str | None = None) -> LoadedModel:
        """Load ``model`` (a hub id or a local directory) and return it ready to generate."""
        ...

    def write_offline_model(self, directory: Path) -> Path:
        """Write a tiny random-weight model with its tokenizer into ``directory``; return the model path."""
        ...
