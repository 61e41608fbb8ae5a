"""The routing rules on their own: keywords, pages, token thresholds; property-tested."""

from __future__ import annotations

import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mamba_router.routing.keywords import DEFAULT_LEGAL_KEYWORDS, find_keywords
from mamba_router.routing.pages import PageCount, count_document_pages, count_pages
from mamba_router.routing.rules import CountedRequest, evaluate_rules
from mamba_router.settings.schema import RoutingSection

# Characters that can never form (part of) a keyword, so surroundings made of them add no match of their own.
SEPARATORS = " \t\n.,;:!?()[]\"'-/"
WORD_CHARS = string.ascii_letters + string.digits + "_" + "éß"


def _random_case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(word, flips + [False] * len(word)))


@given(
    keyword=st.sampled_from(DEFAULT_LEGAL_KEYWORDS),
    flips=st.lists(st.booleans(), max_size=12),
    before=st.text(alphabet=SEPARATORS, max_size=5),
    after=st.text(alphabet=SEPARATORS, max_size=5),
)
def test_a_keyword_as_a_whole_word_matches_in_any_case(keyword, flips, before, after) -> None:
    query = before + _random_case(keyword, flips) + after
    assert find_keywords(query, DEFAULT_LEGAL_KEYWORDS) == [keyword]


@given(
    keyword=st.sampled_from(DEFAULT_LEGAL_KEYWORDS),
    prefix=st.text(alphabet=WORD_CHARS, max_size=3),
    suffix=st.text(alphabet=WORD_CHARS, max_size=3),
)
def test_a_keyword_inside_a_longer_word_never_matches(keyword, prefix, suffix) -> None:
    assume(prefix or suffix)
    word = prefix + keyword + suffix
    assume(word.lower() not in DEFAULT_LEGAL_KEYWORDS)  # "judgement" = "judg" + "ement" is itself a keyword
    assert find_keywords(f"see {word} here", DEFAULT_LEGAL_KEYWORDS) == []


def test_keywords_are_reported_once_in_order_of_appearance() -> None:
    query = "Is the ORDER of the Bench in this case, and the order in the other Case, a decree?"
    assert find_keywords(query, DEFAULT_LEGAL_KEYWORDS) == ["order", "bench", "case", "decree"]
    assert find_keywords("the showcase was orderly; case_no 5; judgments", DEFAULT_LEGAL_KEYWORDS) == []


@given(
    keywords=st.lists(st.text(alphabet=string.ascii_lowercase + " .", min_size=1, max_size=8), min_size=1, max_size=5)
)
def test_configured_keywords_with_regex_characters_match_literally(keywords) -> None:
    keywords = [k.strip() for k in keywords if k.strip() and any(c.isalpha() for c in k)]
    assume(keywords)
    for keyword in keywords:
        assert keyword.lower() in find_keywords(f"( {keyword.upper()} )", keywords)


@given(total=st.integers(1, 500), body=st.text(alphabet=string.ascii_letters + " \n", max_size=40))
def test_page_of_markers_give_the_total(total, body) -> None:
    text = "".join(f"{body}\nPage {i} of {total}\n" for i in range(1, min(total, 5) + 1))
    assert count_pages(text) == PageCount(total, "page-of-markers")


@given(parts=st.lists(st.text(alphabet=string.ascii_letters + " ", max_size=20), min_size=1, max_size=30))
def test_form_feeds_separate_pages_and_blank_pages_do_not_count(parts) -> None:
    text = "\f".join(parts)
    expected = sum(1 for p in parts if p.strip())
    if not text.strip():
        assert count_pages(text).pages == 0
    else:
        assert count_pages(text).pages == max(expected, 1)


def test_documents_count_their_pages_together() -> None:
    docs = ["one\fTwo\fthree", "Page 1 of 2\nx\nPage 2 of 2", "a single page"]
    assert count_document_pages(docs) == PageCount(3 + 2 + 1, "form-feeds")
    assert count_pages("no markers at all") == PageCount(1, "none")
    assert count_pages("  \n ") == PageCount(0, "none")


rule_settings = st.builds(
    RoutingSection,
    long_context_tokens=st.integers(1, 100_000),
    min_pages=st.integers(1, 50),
    rules=st.lists(st.sampled_from(["long_context", "multi_page", "legal_keywords"]), unique=True).map(tuple),
)
queries = st.sampled_from(["What is the total?", "Summarise the judgment", "Was the appeal allowed?", "hello"])


@settings(max_examples=300)
@given(
    settings_=rule_settings,
    tokens=st.integers(0, 200_000),
    more_tokens=st.integers(0, 200_000),
    pages=st.integers(0, 100),
    more_pages=st.integers(0, 100),
    query=queries,
)
def test_more_tokens_or_pages_never_unfire_a_rule(settings_, tokens, more_tokens, pages, more_pages, query) -> None:
    def fired(t: int, p: int) -> set[str]:
        request = CountedRequest(t, "estimate", "estimate", PageCount(p, "caller"), query)
        return {r.name for r in evaluate_rules(settings_, request) if r.fired}

    small = fired(tokens, pages)
    large = fired(tokens + more_tokens, pages + more_pages)
    assert small <= large


@given(settings_=rule_settings, tokens=st.integers(0, 10_000), pages=st.integers(0, 10))
def test_every_rule_is_reported_with_its_inputs(settings_, tokens, pages) -> None:
    request = CountedRequest(tokens, "tokenizer", "some/model", PageCount(pages, "caller"), "the order")
    results = {r.name: r for r in evaluate_rules(settings_, request)}
    assert set(results) == {"long_context", "multi_page", "legal_keywords"}
    for name, result in results.items():
        if name not in settings_.rules:
            assert not result.fired and "off" in result.detail
    if "long_context" in settings_.rules:
        r = results["long_context"]
        assert r.fired == (tokens > settings_.long_context_tokens)
        assert r.inputs["token_count"] == tokens and r.inputs["estimated"] is False
        assert str(tokens) in r.detail and "some/model" in r.detail
    if "multi_page" in settings_.rules:
        assert results["multi_page"].fired == (pages >= settings_.min_pages)


@given(
    word=st.sampled_from(["Page", "page", "PAGE"]),
    glue=st.sampled_from([" of ", " OF ", " / ", "/", "  of  "]),
    total=st.integers(1, 9999),
    before=st.sampled_from(["\n", " ", "(", "- ", "\f"]),
)
def test_page_markers_in_any_common_spelling(word, glue, total, before) -> None:
    assert count_pages(f"text{before}{word} 1{glue}{total}\nmore") == PageCount(total, "page-of-markers")


def test_page_inside_a_longer_word_is_no_marker() -> None:
    for text in ("homepage 1 of 9", "Webpage 2 of 5", "stage 1 of 4", "page_ 1 of 3", "x_page 1 of 7"):
        assert count_pages(text) == PageCount(1, "none"), text
