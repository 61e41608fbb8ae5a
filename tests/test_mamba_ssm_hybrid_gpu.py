"""mamba-ssm's own hybrid checkpoints on real-mamba (GPU), against mamba-ssm itself: a ``MambaLMHeadModel`` with
attention layers (``attn_layer_idx``/``attn_cfg``) and gated MLPs (``d_intermediate``), saved with mamba-ssm's
``save_pretrained``, loaded by the library; logits equal mamba-ssm's forward, greedy tokens and read/ask equal the
plain-PyTorch backend on the same weights.

Rotary embeddings stay off here: mamba-ssm's ``MHA`` needs flash-attn for them, which the GPU machine lacks (the CPU
test checks partial rotary against transformers' Bamba).
"""

from __future__ import annotations

import pytest
import torch

import mamba_router as mr
from mamba_router.samples.synthetic import synthetic_judgment

pytestmark = pytest.mark.gpu
FP32_LOGITS = (5e-3, 0.1)  # (mean, max) |difference|: mamba-ssm's Triton kernels multiply in TF32 (see families)


@pytest.mark.parametrize("layer", ["Mamba2", "Mamba1"])
def test_real_mamba_reads_a_mamba_ssm_hybrid_like_mamba_ssm(tmp_path, offline_tokenizer, layer: str) -> None:
    pytest.importorskip("mamba_ssm")
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    ssm_cfg = {"layer": layer, "d_state": 64, "headdim": 32, "chunk_size": 64} if layer == "Mamba2" else {}
    config = MambaConfig(
        d_model=256,
        d_intermediate=512,
        n_layer=4,
        vocab_size=len(offline_tokenizer),
        ssm_cfg=ssm_cfg,
        attn_layer_idx=[1, 3],
        attn_cfg={"num_heads": 8, "num_heads_kv": 2, "qkv_proj_bias": False, "out_proj_bias": True, "causal": True},
        pad_vocab_size_multiple=8,
    )
    torch.manual_seed(0)
    reference = MambaLMHeadModel(config, device="cuda", dtype=torch.float32).eval()
    reference.save_pretrained(str(tmp_path))
    offline_tokenizer.save_pretrained(tmp_path)

    model = mr.load_model(str(tmp_path), backend="real-mamba", dtype="float32", device="cuda")
    ids = torch.randint(0, 300, (2, 96), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.inference_mode():
        got = model.forward_logits(ids).float()
        expected = reference(ids).logits[..., : got.shape[-1]].float()
    difference = (got - expected).abs()
    assert difference.mean().item() <= FP32_LOGITS[0] and difference.max().item() <= FP32_LOGITS[1]

    plain = mr.load_model(str(tmp_path), backend="mamba2", dtype="float32", device="cuda")
    prompt = "The appeal is allowed. The respondent shall pay"
    assert model.generate(prompt, max_new_tokens=16).token_ids == plain.generate(prompt, max_new_tokens=16).token_ids
    judgment = synthetic_judgment(1, seed=3)
    state = model.read(judgment)
    asked = model.ask(state, "What did the court order?", max_new_tokens=8)
    scratch = model.generate_with_state_space("What did the court order?", context=judgment, max_new_tokens=8)
    assert asked.token_ids == scratch.token_ids
