"""mamba_router: long-document language-model work on Mamba where the machine can, on a Transformer where it cannot.

Start with :func:`detect` (which backend this machine gets, and why), :class:`Router` (route each request to Mamba or
the Transformer, with the reasons and a private log) and :func:`load_model`.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from mamba_router.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ContextTooLongError,
    CorruptCheckpointError,
    GenerationError,
    InvalidRequestError,
    MambaRouterError,
    MambaUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    NoBackendAvailableError,
    RequestTooLargeError,
    UnknownBackendError,
    UnknownModelFamilyError,
    WrongBackendError,
)
from mamba_router.version import __version__

if TYPE_CHECKING:  # the lazy names, for type checkers and editors
    from mamba_router.backends.detection import detect
    from mamba_router.backends.platform import collect_platform_facts
    from mamba_router.backends.protocol import Backend
    from mamba_router.backends.reports import Availability, CandidateReport, DetectionResult, PlatformFacts
    from mamba_router.compat import (
        UnavailableMambaModel,
        detect_mamba_backend,
        get_mamba_info,
        is_mamba_available,
        load_mamba_model,
    )
    from mamba_router.generation.decoding import GenerationStream
    from mamba_router.generation.document_state import DocumentState, DocumentStateCache, StateMismatchError
    from mamba_router.generation.loading import get_backend, load_model
    from mamba_router.generation.protocols import LoadedModel, SupportsDocumentState, SupportsLora
    from mamba_router.generation.results import GenerationResult, Timings
    from mamba_router.routing.decisions import Attempt, RouteDecision, RoutedResult, RuleResult, Truncation
    from mamba_router.routing.router import Router, RouteRequest
    from mamba_router.routing.routing_log import RoutingLog, RoutingLogError
    from mamba_router.routing.token_estimate import estimate_tokens
    from mamba_router.settings.schema import RouterConfig, load_config

# Everything else loads on first use (PEP 562), so ``import mamba_router`` and a routing decision never import
# torch: only loading a model does. ``mamba_router.X`` still works for every name below.
_LAZY: dict[str, str] = {
    "Attempt": "mamba_router.routing.decisions",
    "Availability": "mamba_router.backends.reports",
    "Backend": "mamba_router.backends.protocol",
    "CandidateReport": "mamba_router.backends.reports",
    "DetectionResult": "mamba_router.backends.reports",
    "DocumentState": "mamba_router.generation.document_state",
    "DocumentStateCache": "mamba_router.generation.document_state",
    "GenerationResult": "mamba_router.generation.results",
    "GenerationStream": "mamba_router.generation.decoding",
    "LoadedModel": "mamba_router.generation.protocols",
    "PlatformFacts": "mamba_router.backends.reports",
    "RouteDecision": "mamba_router.routing.decisions",
    "RouteRequest": "mamba_router.routing.router",
    "RoutedResult": "mamba_router.routing.decisions",
    "Router": "mamba_router.routing.router",
    "RouterConfig": "mamba_router.settings.schema",
    "RoutingLog": "mamba_router.routing.routing_log",
    "RoutingLogError": "mamba_router.routing.routing_log",
    "RuleResult": "mamba_router.routing.decisions",
    "StateMismatchError": "mamba_router.generation.document_state",
    "SupportsDocumentState": "mamba_router.generation.protocols",
    "SupportsLora": "mamba_router.generation.protocols",
    "Timings": "mamba_router.generation.results",
    "Truncation": "mamba_router.routing.decisions",
    "UnavailableMambaModel": "mamba_router.compat",
    "collect_platform_facts": "mamba_router.backends.platform",
    "detect": "mamba_router.backends.detection",
    "detect_mamba_backend": "mamba_router.compat",
    "estimate_tokens": "mamba_router.routing.token_estimate",
    "get_backend": "mamba_router.generation.loading",
    "get_mamba_info": "mamba_router.compat",
    "is_mamba_available": "mamba_router.compat",
    "load_config": "mamba_router.settings.schema",
    "load_mamba_model": "mamba_router.compat",
    "load_model": "mamba_router.generation.loading",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mamba_router' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Attempt",
    "DocumentState",
    "DocumentStateCache",
    "StateMismatchError",
    "RouteDecision",
    "RouteRequest",
    "RoutedResult",
    "Router",
    "RouterConfig",
    "RoutingLog",
    "RoutingLogError",
    "RuleResult",
    "Truncation",
    "estimate_tokens",
    "load_config",
    "Availability",
    "Backend",
    "BackendUnavailableError",
    "CandidateReport",
    "ConfigurationError",
    "ContextTooLongError",
    "RequestTooLargeError",
    "CorruptCheckpointError",
    "DetectionResult",
    "GenerationError",
    "GenerationResult",
    "GenerationStream",
    "InvalidRequestError",
    "LoadedModel",
    "MambaRouterError",
    "MambaUnavailableError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NoBackendAvailableError",
    "PlatformFacts",
    "Timings",
    "UnavailableMambaModel",
    "UnknownBackendError",
    "UnknownModelFamilyError",
    "WrongBackendError",
    "SupportsDocumentState",
    "SupportsLora",
    "__version__",
    "collect_platform_facts",
    "detect",
    "detect_mamba_backend",
    "get_backend",
    "get_mamba_info",
    "is_mamba_available",
    "load_mamba_model",
    "load_model",
]
