"""transformers' own classes for each model family, built from a config dict (shared by the family tests)."""

from __future__ import annotations

from typing import Any

import torch

CLASSES = {  # model_type -> (config class, causal LM class) in transformers
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM"),
    "falcon_mamba": ("FalconMambaConfig", "FalconMambaForCausalLM"),
    "granitemoehybrid": ("GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM"),
    "bamba": ("BambaConfig", "BambaForCausalLM"),
    "nemotron_h": ("NemotronHConfig", "NemotronHForCausalLM"),
    "jamba": ("JambaConfig", "JambaForCausalLM"),
    "falcon_h1": ("FalconH1Config", "FalconH1ForCausalLM"),
    "zamba2": ("Zamba2Config", "Zamba2ForCausalLM"),
}


def hf_model(model_type: str, vocab: int, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """transformers' model of ``model_type`` with ``config``, random weights from ``seed``, realistic time steps."""
    import transformers

    config_class, model_class = (getattr(transformers, name) for name in CLASSES[model_type])
    torch.manual_seed(seed)
    model = model_class(config_class(vocab_size=vocab, **config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("dt_bias"):  # realistic time steps, so the tests see real state carry-over
                p.uniform_(-3.0, 0.5)
    return model.eval()


def greedy_next_tokens(model: Any, hf: torch.nn.Module, text: str, new_tokens: int) -> tuple[list[int], list[int]]:
    """Greedy continuations of ``text`` from our loaded ``model`` and from transformers' ``hf.generate`` (on our
    tokenizer's ids, stopping at its EOS): (ours, transformers')."""
    prompt = model.encode(text)
    ours = model.generate_ids([prompt], max_new_tokens=new_tokens)[0].token_ids
    with torch.no_grad():
        expected = hf.generate(
            prompt[None], max_new_tokens=new_tokens, do_sample=False, eos_token_id=model.tokenizer.eos_token_id
        )[0, prompt.numel() :].tolist()
    return ours, expected
