"""mamba_router: long-document language-model work on Mamba where the machine can, on a Transformer where it cannot.

Start with :func:`detect` (which backend this machine gets, and why), :class:`Router` (route each request to Mamba or
the Transformer, with the reasons and a private log) and :func:`load_model`.
"""

from __future__ import annotations

import logging

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
from mamba_router.version import __version__

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
