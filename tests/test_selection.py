"""The selection table over platform facts, and the environment switches with odd spellings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mamba_router as mr
from mamba_router.backends.reports import CandidateReport, PlatformFacts
from mamba_router.backends.selection import (
    FALSE_WORDS,
    TRUE_WORDS,
    SelectionSettings,
    normalize_backend_name,
    parse_switch,
    select_backend,
)

SYSTEMS = st.sampled_from(["linux", "windows", "darwin", "freebsd"])


def platform(system: str, cuda: bool, mps: bool) -> PlatformFacts:
    return PlatformFacts(
        system=system,
        machine="arm64" if system == "darwin" else "x86_64",
        python_version="3.11.7",
        torch_version="2.13.0",
        torch_build="cuda 13.0" if cuda else "cpu",
        cuda_available=cuda,
        cuda_device_name="NVIDIA H100" if cuda else None,
        cuda_device_count=1 if cuda else 0,
        mps_available=mps,
    )


def candidate(name: str, family: str, available: bool, priority: int, forceable: bool = False) -> CandidateReport:
    return CandidateReport(
        name=name,
        distribution=f"dist-{name}",
        family=family,
        priority=priority,
        available=available,
        forceable=forceable,
        reason=f"{name} {'ok' if available else 'cannot run'}",
        install_command=f"pip install dist-{name}",
    )


def standard(real: bool, m2: bool, transformer: bool = True, m2_forceable: bool = False) -> list[CandidateReport]:
    return [
        candidate("real-mamba", "mamba", real, 20),
        candidate("mamba2", "mamba", m2, 10, forceable=m2_forceable),
        candidate("transformer", "transformer", transformer, 0),
    ]


@pytest.mark.parametrize(
    ("system", "cuda", "mps", "real", "m2", "expected"),
    [
        ("linux", True, False, True, False, "real-mamba"),
        ("windows", True, False, True, False, "real-mamba"),
        ("darwin", False, True, False, True, "mamba2"),
        ("linux", False, False, False, False, "transformer"),
        ("linux", True, False, False, False, "transformer"),  # CUDA but no mamba-ssm
        ("darwin", False, False, False, False, "transformer"),  # Intel Mac
        ("freebsd", False, False, False, False, "transformer"),
    ],
)
def test_platform_table(system: str, cuda: bool, mps: bool, real: bool, m2: bool, expected: str) -> None:
    chosen = select_backend(platform(system, cuda, mps), standard(real, m2), SelectionSettings())
    assert chosen.candidate.name == expected


def test_the_reason_for_the_fallback_names_the_preferred_backends_problem() -> None:
    chosen = select_backend(platform("linux", True, False), standard(False, False), SelectionSettings())
    assert chosen.candidate.name == "transformer"
    assert "real-mamba is not usable: real-mamba cannot run" in chosen.reason


@given(
    system=SYSTEMS,
    cuda=st.booleans(),
    mps=st.booleans(),
    real=st.booleans(),
    m2=st.booleans(),
    transformer=st.booleans(),
    enable=st.booleans(),
)
def test_automatic_selection_properties(
    system: str, cuda: bool, mps: bool, real: bool, m2: bool, transformer: bool, enable: bool
) -> None:
    facts = platform(system, cuda, mps)
    candidates = standard(real, m2, transformer)
    settings = SelectionSettings(enable_mamba=enable)
    usable_mamba = [c for c in candidates if c.family == "mamba" and c.available]
    if not transformer and not (enable and usable_mamba):
        with pytest.raises(mr.NoBackendAvailableError):
            select_backend(facts, candidates, settings)
        return
    chosen = select_backend(facts, candidates, settings).candidate
    assert chosen.available, "never choose a backend that cannot run"
    if not enable:
        assert chosen.family == "transformer"
    elif system in ("linux", "windows") and cuda and real:
        assert chosen.name == "real-mamba"
    elif system == "darwin" and mps and m2:
        assert chosen.name == "mamba2"
    elif usable_mamba:
        assert chosen.name == ("real-mamba" if real else "mamba2")  # by priority
    else:
        assert chosen.name == "transformer"


def test_forcing_a_usable_or_forceable_backend() -> None:
    facts = platform("linux", False, False)
    forced = SelectionSettings(forced_backend="transformer")
    assert select_backend(facts, standard(False, False), forced).candidate.name == "transformer"
    forced_m2 = SelectionSettings(forced_backend="mamba2")
    chosen = select_backend(facts, standard(False, False, m2_forceable=True), forced_m2)
    assert chosen.candidate.name == "mamba2"
    assert "although" in chosen.reason


def test_forcing_an_unusable_backend_fails_with_its_reason_and_never_falls_back() -> None:
    facts = platform("linux", False, False)
    with pytest.raises(mr.BackendUnavailableError) as info:
        select_backend(facts, standard(False, False), SelectionSettings(forced_backend="real-mamba"))
    assert info.value.reason == "real-mamba cannot run"
    assert info.value.install_command == "pip install dist-real-mamba"


def test_forcing_a_known_backend_that_is_not_installed_gives_its_install_command() -> None:
    missing = CandidateReport(
        name="mamba2",
        installed=False,
        reason="distribution 'mamba-router-mps' is not installed",
        install_command="pip install 'mamba-router[mps]'",
    )
    candidates = [candidate("transformer", "transformer", True, 0), missing]
    with pytest.raises(mr.BackendUnavailableError, match=r"mamba-router\[mps\]"):
        select_backend(platform("darwin", False, True), candidates, SelectionSettings(forced_backend="mamba2"))


@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=20))
def test_unknown_backend_names_are_errors_listing_the_known_ones(name: str) -> None:
    normalized = normalize_backend_name(name)
    if normalized in (None, "real-mamba", "mamba2", "transformer"):
        return
    with pytest.raises(mr.UnknownBackendError) as info:
        select_backend(
            platform("linux", False, False), standard(False, False), SelectionSettings(forced_backend=normalized)
        )
    assert info.value.known == ("mamba2", "real-mamba", "transformer")
    assert "mamba2, real-mamba, transformer" in str(info.value)


def test_forcing_mamba_while_mamba_is_disabled_is_a_conflict() -> None:
    settings = SelectionSettings(enable_mamba=False, forced_backend="real-mamba")
    with pytest.raises(mr.ConfigurationError, match="ENABLE_MAMBA"):
        select_backend(platform("linux", True, False), standard(True, False), settings)


def odd_spelling(word: str) -> st.SearchStrategy[str]:
    """The word in random case with random surrounding whitespace."""
    cases = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    pad = st.sampled_from(["", " ", "\t", "  \n"])
    return st.builds(
        lambda flips, left, right: left + "".join(c.upper() if f else c for c, f in zip(word, flips)) + right,
        cases,
        pad,
        pad,
    )


@given(st.sampled_from(sorted(FALSE_WORDS)).flatmap(odd_spelling))
def test_enable_mamba_false_spellings(value: str) -> None:
    assert SelectionSettings.from_env({"ENABLE_MAMBA": value}).enable_mamba is False


@given(st.sampled_from(sorted(TRUE_WORDS)).flatmap(odd_spelling))
def test_enable_mamba_true_spellings(value: str) -> None:
    assert SelectionSettings.from_env({"ENABLE_MAMBA": value}).enable_mamba is True


@given(st.text(min_size=1, max_size=12))
def test_enable_mamba_rejects_anything_else_naming_the_variable(value: str) -> None:
    word = value.strip().lower()
    if not word or word in FALSE_WORDS | TRUE_WORDS:
        assert parse_switch(value, variable="ENABLE_MAMBA") in (True, False)
        return
    with pytest.raises(mr.ConfigurationError) as info:
        SelectionSettings.from_env({"ENABLE_MAMBA": value})
    assert "ENABLE_MAMBA" in str(info.value) and "false" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Real_Mamba ", "real-mamba"),
        ("TRANSFORMER", "transformer"),
        ("", None),
        ("  auto ", None),
        ("mamba2", "mamba2"),
    ],
)
def test_backend_override_spellings(raw: str, expected: str | None) -> None:
    assert SelectionSettings.from_env({"MAMBA_ROUTER_BACKEND": raw}).forced_backend == expected


def test_detect_with_real_discovery_and_env_switches() -> None:
    assert mr.detect(environ={"ENABLE_MAMBA": "OFF"}).selected == "transformer"
    assert mr.detect(environ={"MAMBA_ROUTER_BACKEND": "Transformer"}).selected == "transformer"
    with pytest.raises(mr.UnknownBackendError, match="known backends: .*transformer"):
        mr.detect(environ={"MAMBA_ROUTER_BACKEND": "gpt-9"})
    report = mr.detect(environ={"MAMBA_ROUTER_BACKEND": "gpt-9"}, raise_on_error=False)
    assert report.selected is None and "gpt-9" in report.error
    assert {c.name for c in report.candidates} >= {"real-mamba", "mamba2", "transformer"}
