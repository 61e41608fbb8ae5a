"""Every reason the real-mamba backend can give, from made-up facts (mamba-ssm itself is never touched)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mamba_router.backends.reports import PlatformFacts
from mamba_router.errors import ConfigurationError
from mamba_router_cuda.backend import RealMambaBackend
from mamba_router_cuda.probe import KernelFacts, assess

GPU = dict(
    system="linux",
    machine="x86_64",
    python_version="3.12.3",
    torch_version="2.11.0+cu130",
    torch_build="cuda 13.0",
    cuda_available=True,
    cuda_device_name="NVIDIA H100 80GB HBM3",
    cuda_device_count=1,
    cuda_capability="9.0",
)
ALL_KERNELS = KernelFacts(
    mamba_ssm_version="2.3.2.post1",
    selective_scan_kernel=True,
    causal_conv1d_version="1.6.1",
    causal_conv1d_kernel=True,
    triton_installed=True,
)


def facts(**changes) -> PlatformFacts:
    return PlatformFacts(**{**GPU, **changes})


def kernels(**changes) -> KernelFacts:
    return KernelFacts(**{**ALL_KERNELS.__dict__, **changes})


def test_everything_present_is_usable_and_lists_both_kernels() -> None:
    result = assess(facts(), ALL_KERNELS)
    assert result.available
    assert "NVIDIA H100" in result.reason
    assert result.details["mamba1_kernel"] == "present"
    assert result.details["mamba2_kernels"] == "present"
    assert result.details["causal_conv1d"] == "1.6.1"


@pytest.mark.parametrize(
    ("platform", "kernel", "words", "fix"),
    [
        (facts(system="darwin", cuda_available=False, torch_build="cpu"), ALL_KERNELS, ["darwin", "mamba2"], "mps"),
        (
            facts(torch_version=None, torch_build="missing", cuda_available=False),
            ALL_KERNELS,
            ["torch is not importable"],
            "torch",
        ),
        (
            facts(torch_build="cpu", torch_version="2.13.0+cpu", cuda_available=False),
            ALL_KERNELS,
            ["cpu-only build", "CUDA"],
            "torch",
        ),
        (facts(cuda_available=False, cuda_device_name=None), ALL_KERNELS, ["sees no CUDA GPU"], None),
        (facts(cuda_capability="6.1", cuda_device_name="Tesla P100"), ALL_KERNELS, ["compute capability 6.1"], None),
        (
            facts(),
            kernels(mamba_ssm_version=None, selective_scan_kernel=False),
            ["mamba-ssm is not installed"],
            "mamba-ssm",
        ),
        (facts(), kernels(triton_installed=False), ["triton"], "triton"),
        (
            facts(),
            kernels(mamba_ssm_version="2.2.2+cu118torch2.3cxx11abiFALSE"),
            ["built for torch 2.3", "2.11.0"],
            "mamba-ssm",
        ),
        (
            facts(torch_version="2.3.1+cu130"),
            kernels(mamba_ssm_version="2.2.2+cu118torch2.3cxx11abiFALSE"),
            ["built for CUDA 118", "cuda 13.0"],
            "mamba-ssm",
        ),
    ],
)
def test_each_blocking_problem_has_its_own_reason_and_fix(platform, kernel, words, fix) -> None:
    result = assess(platform, kernel)
    assert not result.available
    for word in words:
        assert word in result.reason
    if fix is None:
        assert result.install_command is None
    else:
        assert fix in result.install_command


def test_cpu_only_torch_fix_also_installs_missing_kernels() -> None:
    result = assess(
        facts(torch_build="cpu", cuda_available=False), kernels(mamba_ssm_version=None, causal_conv1d_version=None)
    )
    assert "download.pytorch.org" in result.install_command and "mamba-ssm" in result.install_command


def test_missing_mamba1_kernel_leaves_mamba2_usable_and_says_so() -> None:
    result = assess(facts(), kernels(selective_scan_kernel=False))
    assert result.available
    assert "selective_scan_cuda is missing" in result.reason and "Mamba-2 can" in result.reason
    assert result.details["mamba1_kernel"] == "missing"


def test_missing_causal_conv1d_is_a_slower_path_not_a_failure() -> None:
    result = assess(facts(), kernels(causal_conv1d_version=None, causal_conv1d_kernel=False))
    assert result.available
    assert "causal-conv1d is missing" in result.reason and "slower" in result.reason
    assert result.details["causal_conv1d"] == "missing"


def test_probe_on_this_machine_never_raises_and_gives_a_reason() -> None:
    from mamba_router.backends.platform import collect_platform_facts

    result = RealMambaBackend().probe(collect_platform_facts())
    assert result.reason
    if not result.available:
        assert result.details["gpu"] or result.install_command


def test_the_fused_step_is_off_on_triton_older_than_3(monkeypatch, caplog) -> None:
    """mamba-ssm runs on older Triton; the fused step's kernels need 3.0: decoding falls back, saying why."""
    import sys
    import types

    from mamba_router_cuda import kernel_ops

    monkeypatch.setitem(sys.modules, "triton", types.SimpleNamespace(__version__="2.3.1"))
    with caplog.at_level("WARNING", logger="mamba_router_cuda.kernel_ops"):
        assert kernel_ops._fused_step_kernels() is None
    assert "triton 3.0 or newer (found 2.3.1)" in caplog.text


AUTO_PDL = (  # MAMBA_ROUTER_PDL unset: on for small models (mamba_router_cuda.probe.pdl_suits)
    "on for one sequence at a time (triton 3.6.0; programmatic dependent launch where the GPU runs it, for models of "
    "up to 8 MiB a layer)"
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"triton_version": "3.6.0"}, AUTO_PDL),
        ({"triton_version": "2.3.1"}, "off: triton 2.3.1 is older than 3.0 (unfused kernels)"),
        ({"triton_version": "3.6.0", "fused_step_setting": "0"}, "off (MAMBA_ROUTER_FUSED_STEP=0)"),
        ({"triton_version": "3.6.0", "fused_step_setting": " On "}, AUTO_PDL),
        ({"triton_version": "3.6.0", "fused_step_setting": "maybe"}, "error: MAMBA_ROUTER_FUSED_STEP='maybe'"),
        (
            {"triton_version": "3.6.0", "fused_step_rows_setting": " 16 "},
            "on for batches of up to 16 sequences (MAMBA_ROUTER_FUSED_STEP_ROWS=16; triton 3.6.0; programmatic",
        ),
        ({"triton_version": "3.6.0", "fused_step_rows_setting": "1"}, "on for one sequence at a time"),
        ({"triton_version": "3.6.0", "fused_step_rows_setting": "65"}, "error: MAMBA_ROUTER_FUSED_STEP_ROWS='65'"),
        ({"triton_version": "3.6.0", "fused_step_rows_setting": "all"}, "error: MAMBA_ROUTER_FUSED_STEP_ROWS='all'"),
        (
            {"triton_version": "3.6.0", "pdl_setting": "1"},
            "on for one sequence at a time (triton 3.6.0; programmatic dependent launch where the GPU runs it "
            "(MAMBA_ROUTER_PDL=1))",
        ),
        ({"triton_version": "3.6.0", "pdl_setting": "off"}, "on for one sequence at a time (triton 3.6.0)"),
        ({"triton_version": "3.6.0", "pdl_setting": " "}, AUTO_PDL),
        ({"triton_version": "3.6.0", "pdl_setting": "fast"}, "error: MAMBA_ROUTER_PDL='fast'"),
    ],
)
def test_the_details_say_whether_decoding_takes_the_fused_step(changes, expected) -> None:
    assert assess(facts(), kernels(**changes)).details["fused_step"].startswith(expected)


@given(st.text(max_size=8))
def test_the_fused_step_batch_setting_is_a_whole_number_from_1_to_64_or_refused(setting: str) -> None:
    from mamba_router_cuda.probe import fused_step_rows

    rows = fused_step_rows(setting)
    stripped = setting.strip()
    if not stripped:
        assert rows == 1
    elif stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= 64:
        assert rows == int(stripped)
    else:
        assert rows is None


def test_a_bad_fused_step_batch_setting_fails_loading_with_a_typed_error(monkeypatch) -> None:
    from mamba_router_cuda import kernel_ops

    monkeypatch.setenv("MAMBA_ROUTER_FUSED_STEP_ROWS", "many")
    with pytest.raises(ConfigurationError, match="MAMBA_ROUTER_FUSED_STEP_ROWS='many' is not a batch size"):
        kernel_ops._fused_step_kernels()


@pytest.mark.parametrize(
    ("arch", "d_model", "n_layer", "suits"),
    [("mamba2", 768, 24, True), ("mamba1", 768, 24, True), ("mamba2", 2048, 48, False), ("mamba1", 2048, 48, False)],
    ids=["mamba2-130m", "mamba1-130m", "mamba2-1.4b", "mamba1-1.4b"],
)
def test_auto_pdl_suits_the_130m_shapes_where_it_measured_faster_and_not_the_1_4b(
    arch: str, d_model: int, n_layer: int, suits: bool
) -> None:
    from mamba_router.models.mamba import MambaLM
    from mamba_router.models.mamba_config import SSMConfig
    from mamba_router.models.torch_ops import TorchOps
    from mamba_router_cuda.kernel_ops import layer_weight_bytes
    from mamba_router_cuda.probe import pdl_suits

    with torch.device("meta"):  # shapes only: no memory for 1.4B parameters
        model = MambaLM(SSMConfig(arch=arch, d_model=d_model, n_layer=n_layer, vocab_size=50280), TorchOps())
    model = model.to(torch.bfloat16)
    assert pdl_suits(layer_weight_bytes(model)) is suits
    assert pdl_suits(layer_weight_bytes(model.float())) is False  # the same 130M layers in float32 are 14 MB


@pytest.mark.parametrize(("value", "read"), [(None, None), ("  ", None), ("1", True), (" On", True), ("off", False)])
def test_the_pdl_setting_is_auto_when_unset(monkeypatch, value: str | None, read: bool | None) -> None:
    from mamba_router_cuda.kernel_ops import pdl_setting

    if value is None:
        monkeypatch.delenv("MAMBA_ROUTER_PDL", raising=False)
    else:
        monkeypatch.setenv("MAMBA_ROUTER_PDL", value)
    assert pdl_setting() is read


def test_a_pdl_setting_that_is_not_on_or_off_is_refused(monkeypatch) -> None:
    from mamba_router_cuda.kernel_ops import pdl_setting

    monkeypatch.setenv("MAMBA_ROUTER_PDL", "fast")
    with pytest.raises(ConfigurationError, match="MAMBA_ROUTER_PDL='fast' is not an on/off value"):
        pdl_setting()


def test_a_layer_is_one_of_the_stacks_layers_not_an_expert() -> None:
    from mamba_router_cuda.kernel_ops import layer_weight_bytes

    class Stack(torch.nn.Module):  # two 1 KiB layers, each with a list of eight small experts
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16, bias=False) for _ in range(2))
            for layer in self.layers:
                layer.experts = torch.nn.ModuleList(torch.nn.Linear(2, 2, bias=False) for _ in range(8))

    assert layer_weight_bytes(Stack()) == (16 * 16 + 8 * 4) * 4
    assert layer_weight_bytes(torch.nn.Linear(4, 4)) == float("inf")  # no layers: PDL stays off
