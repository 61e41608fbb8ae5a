"""Whether each configured endpoint answers now and serves its model (``mamba-router info``)."""

from __future__ import annotations

import time

import httpx
from pydantic import BaseModel, ConfigDict

from mamba_router.remote.client import EndpointFailure, api_key, list_models
from mamba_router.settings.schema import RemoteSection


class EndpointCheck(BaseModel):
    """One endpoint checked: reachable and serving its model, or why not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    label: str
    model: str
    ok: bool
    detail: str
    elapsed_ms: float


def check_endpoints(settings: RemoteSection, *, transport: httpx.BaseTransport | None = None) -> list[EndpointCheck]:
    """Ask every ``[[remote.*]]`` endpoint for its model list (``GET /models``, within the connect timeout)."""
    timeout = httpx.Timeout(settings.connect_timeout_s)
    checks = []
    with httpx.Client(timeout=timeout, transport=transport) as client:
        for family in ("mamba", "transformer"):
            for endpoint in settings.endpoints_of(family):
                started = time.perf_counter()
                try:
                    served = list_models(client, endpoint, api_key(endpoint))
                except EndpointFailure as failure:
                    ok, detail = False, failure.cause
                else:
                    ok = endpoint.model in served
                    listed = ", ".join(served[:8]) or "nothing"
                    detail = (
                        f"serves {endpoint.model}" if ok else f"does not serve {endpoint.model} (it lists {listed})"
                    )
                elapsed = (time.perf_counter() - started) * 1000
                checks.append(
                    EndpointCheck(
                        family=family,
                        label=endpoint.label,
                        model=endpoint.model,
                        ok=ok,
                        detail=detail,
                        elapsed_ms=round(elapsed, 1),
                    )
                )
    return checks
