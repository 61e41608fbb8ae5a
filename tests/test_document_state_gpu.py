"""Read once, ask many on the real-mamba backend (GPU): the state comes from mamba-ssm's fused forward, the question
goes through the captured CUDA-graph step, and the answers equal reading everything from scratch."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu

if importlib.util.find_spec("mamba_ssm") is None:  # pragma: no cover
    pytest.skip("needs mamba-ssm", allow_module_level=True)

from mamba_router.generation.document_state import DocumentState, StateMismatchError  # noqa: E402
from mamba_router.generation.loading import load_model  # noqa: E402
from mamba_router.samples.synthetic import synthetic_judgment  # noqa: E402

QUESTIONS = ["What did the court order?", "Was the appeal allowed, and with what costs?"]


def _kernel_hidden(name: str) -> bool:
    return name in sys.modules and sys.modules[name] is None


@pytest.fixture(scope="module", params=["Mamba1", "Mamba2"])
def real(request, tmp_path_factory, offline_tokenizer):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    layer = request.param
    if layer == "Mamba1" and _kernel_hidden("selective_scan_cuda"):
        pytest.skip("Mamba-1 on real-mamba needs selective_scan_cuda (hidden here)")
    ssm_cfg = {"layer": layer} if layer == "Mamba1" else {"layer": layer, "headdim": 32}
    config = MambaConfig(d_model=256, n_layer=2, vocab_size=len(offline_tokenizer), ssm_cfg=ssm_cfg)
    torch.manual_seed(9)
    directory = tmp_path_factory.mktemp(f"state-{layer}")
    MambaLMHeadModel(config).save_pretrained(str(directory))
    offline_tokenizer.save_pretrained(directory)
    return load_model(directory, backend="real-mamba", dtype="float32")


def test_real_mamba_answers_from_the_state_like_from_scratch(real, tmp_path) -> None:
    judgment = synthetic_judgment(3, seed=12)
    state = real.read(judgment)
    before = {k: t.clone() for k, t in state.tensors.items()}
    for question in QUESTIONS:
        cached = real.ask(state, question, max_new_tokens=12)
        scratch = real.generate_with_state_space(question, context=judgment, max_new_tokens=12)
        assert cached.token_ids == scratch.token_ids
    assert all(torch.equal(before[k], state.tensors[k]) for k in before)
    path = state.save(tmp_path / "s.safetensors")
    loaded = DocumentState.load(path, model_identity=real.state_identity, device="cuda")
    assert (
        real.ask(loaded, QUESTIONS[0], max_new_tokens=6).token_ids
        == real.ask(state, QUESTIONS[0], max_new_tokens=6).token_ids
    )
    with pytest.raises(StateMismatchError):
        DocumentState.load(path, model_identity="another-model")
