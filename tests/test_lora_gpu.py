"""LoRA on the real-mamba backend (GPU): training runs on mamba-ssm's kernels with every adapter called as a module,
and a model loaded with the adapter merged computes the adapted model on the same kernels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

if importlib.util.find_spec("mamba_ssm") is None or importlib.util.find_spec("peft") is None:  # pragma: no cover
    pytest.skip("needs mamba-ssm and peft", allow_module_level=True)

from mamba_router.generation.loading import load_model  # noqa: E402
from mamba_router.lora.config import load_lora_config  # noqa: E402
from mamba_router.lora.trainable import trainable_view  # noqa: E402
from mamba_router.lora.trainer import check_adapters_run, completion_loss, lora_model  # noqa: E402

EXPECTED = {"Mamba1": ["in_proj", "x_proj", "dt_proj", "out_proj"], "Mamba2": ["in_proj", "out_proj"]}


@pytest.fixture(scope="module", params=["Mamba1", "Mamba2"])
def checkpoint(request, tmp_path_factory, offline_tokenizer) -> tuple[str, Path]:
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    layer = request.param
    ssm_cfg = {"layer": layer} if layer == "Mamba1" else {"layer": layer, "headdim": 32}
    config = MambaConfig(d_model=256, n_layer=2, vocab_size=len(offline_tokenizer), ssm_cfg=ssm_cfg)
    torch.manual_seed(7)
    directory = tmp_path_factory.mktemp(f"lora-{layer}")
    MambaLMHeadModel(config).save_pretrained(str(directory))
    offline_tokenizer.save_pretrained(directory)
    return layer, directory


def _kernel_present(name: str) -> bool:
    import sys

    if name in sys.modules and sys.modules[name] is None:  # hidden by MAMBA_ROUTER_TEST_HIDE_MODULES
        return False
    return importlib.util.find_spec(name) is not None


def test_a_lora_step_on_real_mamba_changes_the_logits_and_the_merged_kernels_agree(checkpoint, tmp_path) -> None:
    layer, directory = checkpoint
    if layer == "Mamba1" and not _kernel_present("selective_scan_cuda"):
        pytest.skip("Mamba-1 on real-mamba needs selective_scan_cuda (hidden or missing here)")
    real = load_model(directory, backend="real-mamba", dtype="float32")
    ids = torch.randint(1, 300, (1, 48), device="cuda")
    base = real.forward_logits(ids).clone()
    trainable = trainable_view(real)
    assert trainable.default_targets == EXPECTED[layer]
    config = load_lora_config(None, data="unused.jsonl", output_dir=str(tmp_path))
    peft_model = lora_model(trainable, config, EXPECTED[layer])
    check_adapters_run(peft_model, trainable.logits, trainable.device)  # every adapter is on the forward path
    vocab = base.shape[-1]
    torch.testing.assert_close(trainable.logits(peft_model, ids)[..., :vocab], base, rtol=1e-3, atol=1e-3)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    completion_loss(trainable.logits(peft_model, ids), ids).backward()
    optimizer.step()
    with torch.no_grad():
        adapted = trainable.logits(peft_model, ids)[..., :vocab]
    assert (adapted - base).abs().max() > 1e-2  # one step moved the model
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    served = load_model(directory, backend="real-mamba", dtype="float32", adapter=tmp_path / "adapter")
    merged = served.forward_logits(ids)  # mamba-ssm's kernels on the merged weights
    torch.testing.assert_close(merged, adapted, rtol=1e-3, atol=1e-3)
    answer = served.generate("The appeal", max_new_tokens=4)
    assert answer.completion_tokens >= 1
