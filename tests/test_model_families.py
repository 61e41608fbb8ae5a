"""Which backend runs which model family here: read from each family's mixers and each backend's probe, never from
names; and ``mamba-router models`` prints it."""

from __future__ import annotations

import json

import pytest
from test_cuda_probe import facts, kernels

from mamba_router.backends.reports import CandidateReport
from mamba_router.cli import main
from mamba_router.models.registry import FAMILIES, family_support
from mamba_router_cuda.probe import assess
from mamba_router_mps.backend import Mamba2Backend

BY_NAME = {f.name: f for f in FAMILIES}


def real_mamba(**kernel_changes) -> CandidateReport:
    """real-mamba as discovery reports it on a GPU machine with the given kernels."""
    a = assess(facts(), kernels(**kernel_changes))
    return CandidateReport(
        name="real-mamba", family="mamba", available=a.available, reason=a.reason, install_command=a.install_command,
        details=a.details,
    )  # fmt: skip


def test_real_mamba_runs_every_family_with_all_kernels() -> None:
    candidate = real_mamba()
    assert {name: family_support(f, candidate).runs for name, f in BY_NAME.items()} == dict.fromkeys(BY_NAME, "yes")


def test_without_the_mamba1_kernel_only_mamba2_families_run_and_the_fix_is_named() -> None:
    candidate = real_mamba(selective_scan_kernel=False)
    assert candidate.available  # the backend itself is usable: Mamba-2 runs
    for name, family in BY_NAME.items():
        if "mamba1" not in family.mixers:
            assert family_support(family, candidate).runs == "yes", name
    for name in ("mamba", "falcon_mamba"):
        support = family_support(BY_NAME[name], candidate)
        assert support.runs == "no" and support.needs is not None and "mamba1" in support.needs


def test_a_backend_that_cannot_run_here_says_why_and_how_to_fix_it() -> None:
    no_gpu = real_mamba()
    no_gpu = no_gpu.model_copy(update={"available": False, "reason": "no CUDA GPU", "install_command": "fix it"})
    support = family_support(BY_NAME["mamba2"], no_gpu)
    assert (support.runs, support.needs) == ("no", "no CUDA GPU; fix it")
    missing = CandidateReport(name="real-mamba", family="mamba", installed=False, reason="not installed")
    assert family_support(BY_NAME["mamba"], missing).runs == "no"


def test_the_plain_backend_runs_every_family_at_least_when_forced() -> None:
    a = Mamba2Backend().probe(facts(cuda_available=False))
    candidate = CandidateReport(
        name="mamba2", family="mamba", available=a.available, forceable=a.forceable, reason=a.reason, details=a.details
    )
    assert {family_support(f, candidate).runs for f in FAMILIES} == {"when forced"}


@pytest.mark.parametrize("as_json", [True, False])
def test_the_models_command_lists_every_family(capsys, as_json: bool) -> None:
    assert main(["models", "--json"] if as_json else ["models"]) == 0
    out = capsys.readouterr().out
    if not as_json:
        assert all(f.name in out for f in FAMILIES) and "mamba2:" in out
        return
    report = json.loads(out)
    assert [e["family"] for e in report] == [f.name for f in FAMILIES]
    for entry in report:
        backends = {b["backend"]: b for b in entry["backends"]}
        assert {"real-mamba", "mamba2"} <= set(backends)
        assert backends["mamba2"]["runs"] in ("yes", "when forced")
