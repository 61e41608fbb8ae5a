"""Deployed families on real-mamba vs. transformers' own implementation (with mamba-ssm's kernels installed).

Three shapes of about 1B parameters, random weights, bf16, built with transformers' own classes and saved with
``save_pretrained``; ours loads the saved directory through ``mr.load_model(backend="real-mamba")``:
  falcon_mamba   FalconMamba-shaped (Mamba-1 with B/C/dt norms): 2048 wide, 24 layers
  codestral      Mamba-Codestral-shaped (Mamba-2, 8 groups): 2048 wide, 32 layers, state 128
  granite_h      Granite-4.0-H-1B-shaped hybrid: 1536 wide, 40 layers (4 attention, no position embedding)
  mamba2_1.4b    state-spaces/mamba2-1.4b-shaped, in transformers' format: 2048 wide, 48 layers, state 128
  mamba1_1.4b    state-spaces/mamba-1.4b-shaped, in transformers' format: 2048 wide, 48 layers, state 16

Columns as in ``bench_real_mamba.py`` (prefill: one forward returning the last logits; decode: (time of N+1 tokens
- time of 1) / N). Also the state a document leaves: the hybrid's (SSM + its attention layers' keys/values) against
the KV cache of a same-width 40-layer Transformer at the same length. And read once, ask many on ours
(``--document-tokens``, as ``bench_document_state.py``): a question's time to first token from a cached document
state against a question with no document and against reading the document again, and whether the cached answer's
tokens equal reading document and question from scratch.

    python benchmarks/bench_families.py --families granite_h codestral falcon_mamba --out families.json
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from typing import Any

import torch
from bench_document_state import QUESTION_TOKENS, words
from bench_document_state import measure as measure_document
from bench_real_mamba import VOCAB, HfGenerate, Path, measure, render
from common import markdown_table, wordlevel_tokenizer

SHAPES = ("granite_h", "codestral", "falcon_mamba", "mamba2_1.4b", "mamba1_1.4b")


def hf_model(family: str) -> Any:
    """The random-weight transformers model of one of SHAPES."""
    from transformers import (
        FalconMambaConfig,
        FalconMambaForCausalLM,
        GraniteMoeHybridConfig,
        GraniteMoeHybridForCausalLM,
        Mamba2Config,
        Mamba2ForCausalLM,
        MambaConfig,
        MambaForCausalLM,
    )

    torch.manual_seed(0)
    if family == "falcon_mamba":
        return FalconMambaForCausalLM(FalconMambaConfig(vocab_size=VOCAB, hidden_size=2048, num_hidden_layers=24))
    if family == "codestral":
        config = Mamba2Config(
            vocab_size=VOCAB,
            hidden_size=2048,
            num_hidden_layers=32,
            num_heads=64,
            head_dim=64,
            n_groups=8,
            state_size=128,
        )
        return Mamba2ForCausalLM(config)
    if family == "mamba2_1.4b":
        config = Mamba2Config(
            vocab_size=VOCAB, hidden_size=2048, num_hidden_layers=48, num_heads=64, head_dim=64, n_groups=1
        )
        return Mamba2ForCausalLM(config)
    if family == "mamba1_1.4b":
        return MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=2048, num_hidden_layers=48, state_size=16))
    if family != "granite_h":
        raise ValueError(f"unknown shape {family!r}; known: {', '.join(SHAPES)}")
    kinds = ["attention" if i in (5, 15, 25, 35) else "mamba" for i in range(40)]
    config = GraniteMoeHybridConfig(
        vocab_size=VOCAB,
        hidden_size=1536,
        num_hidden_layers=40,
        layer_types=kinds,
        num_attention_heads=12,
        num_key_value_heads=4,
        shared_intermediate_size=4096,
        num_local_experts=0,
        position_embedding_type="nope",
        mamba_n_heads=48,
        mamba_d_head=64,
        mamba_d_state=128,
        tie_word_embeddings=True,
    )
    return GraniteMoeHybridForCausalLM(config)


class OursFromDirectory(Path):
    decode_tokens = 128
    repeats = 3

    def __init__(self, directory: str, *, fused_step: bool = True) -> None:
        import mamba_router as mr
        from mamba_router_cuda.kernel_ops import KernelOps

        self.name = "ours (real-mamba)" if fused_step else "ours-unfused (real-mamba, unfused step)"
        self.model = mr.load_model(directory, backend="real-mamba", dtype="bfloat16", device="cuda")
        if not fused_step:  # the same model on the unfused step's ops (MAMBA_ROUTER_FUSED_STEP=0 does the same)
            self.model.model.ops = KernelOps(fused_step=False)
        self.model._eos = []  # random weights: never stop early

    def prefill(self, ids: torch.Tensor) -> Any:
        return self.model.stepper(ids.shape[0]).prefill(list(ids))

    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        return self.model.generate_ids(list(ids), max_new_tokens=new_tokens)


def make_path(name: str, directory: str, hf: Any) -> Path:
    """The path ``name`` (ours, ours-unfused, hf) for the checkpoint in ``directory`` and transformers' ``hf``."""
    if name == "hf":
        return HfGenerate(hf, f"hf {type(hf).__name__}")
    return OursFromDirectory(directory, fused_step=name == "ours")


def state_sizes(directory: str, length: int) -> dict[str, float]:
    """MiB of the state after reading ``length`` tokens, and of a same-width 40-layer Transformer's KV cache."""
    import mamba_router as mr

    model = mr.load_model(directory, backend="real-mamba", dtype="bfloat16", device="cuda")
    stepper = model.stepper(1)
    stepper.prefill([torch.randint(1, VOCAB - 8, (length,), device="cuda")])
    ours = stepper.inner.cache.nbytes / 2**20
    kv = 2 * 40 * 4 * 128 * length * 2 / 2**20  # keys+values, 40 layers, 4 KV heads of 128, bf16
    return {"state_mib": ours, "transformer_kv_mib": kv}


def document_row(family: str, directory: str, tokens: int) -> dict[str, Any]:
    """Read once, ask many on ours: the times to first token and the state of a ``tokens``-token document."""
    import mamba_router as mr

    model = mr.load_model(directory, backend="real-mamba", dtype="bfloat16", device="cuda")
    row = measure_document(model, "ours (real-mamba)", words(tokens, 1), words(QUESTION_TOKENS, 2), compare_tokens=True)
    return {**row, "model": family, "path": "document state", "batch": 1}


def render_documents(rows: list[dict[str, Any]]) -> str:
    """The read-once-ask-many rows as a table: TTFT from the cached state, with no document, and re-reading."""
    header = ["model", "document tokens", "read s", "TTFT cached ms", "TTFT no document ms", "cached / no doc"]
    header += ["TTFT re-read ms", "state MiB", "same tokens as scratch"]
    cells = [
        [
            r["model"],
            f"{r['document_tokens']:,}",
            f"{r['read_s']:.3f}",
            f"{r['ttft_cached_ms']:.2f}",
            f"{r['ttft_no_document_ms']:.2f}",
            f"{r['ttft_cached_ms'] / r['ttft_no_document_ms']:.2f}x",
            f"{r['ttft_reread_ms']:.1f}",
            f"{r['state_bytes'] / 2**20:,.1f}",
            str(r["same_tokens_as_scratch"]),
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["granite_h", "codestral", "falcon_mamba"], choices=SHAPES)
    parser.add_argument("--prefill", nargs="+", type=int, default=[16_384, 131_072])
    parser.add_argument("--decode", nargs="+", type=int, default=[1024])
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--peak-tb-s", type=float, default=4.8, help="the device's memory bandwidth (H200: 4.8)")
    parser.add_argument("--paths", nargs="+", default=["ours", "hf"], choices=["ours", "ours-unfused", "hf"])
    parser.add_argument("--document-tokens", type=int, default=16_384, help="read once, ask many (0: skip)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    tokenizer = wordlevel_tokenizer(VOCAB)
    results: list[dict[str, Any]] = []
    for family in args.families:
        with tempfile.TemporaryDirectory() as directory:
            hf = hf_model(family).to(torch.bfloat16)
            hf.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            hf = hf.to("cuda").eval()
            for name in args.paths:
                path = make_path(name, directory, hf)
                row = {"model": family, **measure(path, 1, args.prefill, args.decode, deadline)}
                results.append(row)
                print(json.dumps(row), flush=True)
                del path
                gc.collect()
                torch.cuda.empty_cache()
            del hf
            gc.collect()
            torch.cuda.empty_cache()
            if args.document_tokens:
                results.append(document_row(family, directory, args.document_tokens))
                print(json.dumps(results[-1]), flush=True)
                gc.collect()
                torch.cuda.empty_cache()
            if family == "granite_h":
                sizes = state_sizes(directory, args.prefill[-1])
                results.append({"model": family, "path": "state after reading", "batch": 1, **sizes})
                print(json.dumps(results[-1]), flush=True)
    device = torch.cuda.get_device_name(0)
    if args.out:  # written before the table, so a rendering fault never loses the measurements
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(
                {"device": device, "torch": torch.__version__, "args": vars(args), "results": results}, f, indent=2
            )
    print(f"\ndevice: {device}, torch {torch.__version__}\n")
    speeds = [r for r in results if "state_mib" not in r and r["path"] != "document state"]
    print(render(speeds, args.prefill, args.decode, args.peak_tb_s))
    documents = [r for r in results if r["path"] == "document state"]
    if documents:
        print(f"\nRead once, ask many ({QUESTION_TOKENS}-token question, bf16):\n")
        print(render_documents(documents))


if __name__ == "__main__":
    main()
