"""The routing rules as pure functions of counted inputs: easy to reason about, easy to test.

A request goes to Mamba when any rule that is on fires. Each rule only looks at a number that can only grow with the
request (tokens, pages) or at the query's words, so a longer or larger request never moves from Mamba to the
Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mamba_router.routing.decisions import RuleResult, TokenCountMethod
from mamba_router.routing.keywords import find_keywords
from mamba_router.routing.pages import PageCount
from mamba_router.routing.token_estimate import ESTIMATE_LABEL
from mamba_router.settings.schema import RoutingSection


@dataclass(frozen=True)
class CountedRequest:
    """What the rules look at: the token count (and how it was made), the pages, and the query."""

    token_count: int
    token_count_method: TokenCountMethod
    token_counter: str
    pages: PageCount
    query: str


def long_context_rule(settings: RoutingSection, request: CountedRequest) -> RuleResult:
    """Fires when context + query take more than ``long_context_tokens`` tokens."""
    limit = settings.long_context_tokens
    fired = request.token_count > limit
    how = ESTIMATE_LABEL if request.token_count_method == "estimate" else f"tokenizer of {request.token_counter}"
    noun = "token" if request.token_count == 1 else "tokens"
    detail = f"{request.token_count} {noun} ({how}) {'>' if fired else '<='} {limit}"
    return RuleResult(
        name="long_context",
        fired=fired,
        detail=detail,
        inputs={
            "token_count": request.token_count,
            "threshold": limit,
            "method": request.token_count_method,
            "estimated": request.token_count_method == "estimate",
        },
    )


def multi_page_rule(settings: RoutingSection, request: CountedRequest) -> RuleResult:
    """Fires when the documents have ``min_pages`` pages or more."""
    minimum = settings.min_pages
    fired = request.pages.pages >= minimum
    detail = f"{request.pages.detail()} {'>=' if fired else '<'} {minimum}"
    return RuleResult(
        name="multi_page",
        fired=fired,
        detail=detail,
        inputs={"pages": request.pages.pages, "source": request.pages.source, "min_pages": minimum},
    )


def legal_keyword_rule(settings: RoutingSection, request: CountedRequest) -> RuleResult:
    """Fires when the query holds a configured legal keyword as a whole word, in any case."""
    found = find_keywords(request.query, settings.legal_keywords)
    detail = "query has " + ", ".join(repr(k) for k in found) if found else "no legal keyword in the query"
    return RuleResult(name="legal_keywords", fired=bool(found), detail=detail, inputs={"matched": found})


RULES = {
    "long_context": long_context_rule,
    "multi_page": multi_page_rule,
    "legal_keywords": legal_keyword_rule,
}


def evaluate_rules(settings: RoutingSection, request: CountedRequest) -> list[RuleResult]:
    """Every rule's result, in a fixed order; a rule switched off in the config is reported as off."""
    results = []
    for name, rule in RULES.items():
        if name in settings.rules:
            results.append(rule(settings, request))
        else:
            results.append(RuleResult(name=name, fired=False, detail="off (not in model_routing.rules)"))
    return results
