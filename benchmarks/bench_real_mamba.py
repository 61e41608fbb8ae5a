"""real-mamba vs. the upstream paths, side by side on one GPU: prefill time and memory, decode ms/token.

Paths, all with random weights of the same configuration, bf16:
  ours        real-mamba: mamba_router's Mamba layer stack on mamba-ssm's kernels (KernelOps), eager prefill into the
              state cache, CUDA-graph decode with the fused step kernels (mamba_router_cuda.fused_step), block
              read-back; the same weights as the mamba-ssm model
  ours-unfused  the same with the unfused step (mamba-ssm's and causal-conv1d's step kernels), for comparison
  mamba-ssm   MambaLMHeadModel.generate(cg=True); prefill = its plain forward (fused kernels, no state kept)
  hf          transformers MambaForCausalLM / Mamba2ForCausalLM, generate(do_sample=False)
  llama       a same-size Llama (sdpa) through mamba_router's own transformer backend

Decode ms/token = (time to generate N+1 tokens - time to generate 1 token) / N, medians of 5 runs (N=256) for
the fast paths and of 3 runs (N=64) for HF and Llama, token ids
given directly (tokenization excluded on every path). Prefill = one forward over the prompt returning the last
logits. Peak memory = torch.cuda.max_memory_allocated during the prefill, weights included.
Bandwidth beside each decode figure: the bytes one step must move (every weight read once, the states read and
written) over the measured time, and the floor those bytes set at the device's peak (--peak-tb-s).

    python benchmarks/bench_real_mamba.py --sizes 130m 1.4b --layers Mamba1 Mamba2 --out results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from common import fmt, markdown_table, median_seconds, peak_gib, wordlevel_tokenizer

VOCAB = 50280
SIZES = {
    "130m": {"d_model": 768, "n_layer": 24},
    "370m": {"d_model": 1024, "n_layer": 48},
    "1.4b": {"d_model": 2048, "n_layer": 48},
    "2.8b": {"d_model": 2560, "n_layer": 64},
}
LLAMA = {
    "130m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "1.4b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 5632},
}


def mamba_ssm_model(size: str, layer: str) -> Any:
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    cfg = MambaConfig(**SIZES[size], vocab_size=VOCAB, ssm_cfg={"layer": layer}, pad_vocab_size_multiple=8)
    torch.manual_seed(0)
    return MambaLMHeadModel(cfg, device="cuda", dtype=torch.bfloat16).eval()


def ours_from_mamba_ssm(
    lm: Any, tokenizer: Any, name: str = "bench", *, fused_step: bool = True, ssm_state_dtype: str = "model"
) -> Any:
    """The real-mamba loaded model holding the weights of mamba-ssm's ``lm`` (the checkpoint names are the same),
    its SSM states in the weights' dtype (``"model"``, real-mamba's default and mamba-ssm's) or ``"float32"``."""
    import dataclasses

    from mamba_router.generation.ssm_model import SSMModel
    from mamba_router.models.mamba import build_mamba
    from mamba_router.models.mamba_config import config_from_json
    from mamba_router_cuda.decode_graph import CudaGraphDecoder
    from mamba_router_cuda.kernel_ops import KernelOps

    cfg, _ = config_from_json(dataclasses.asdict(lm.config), name)
    parameter = next(lm.parameters())
    ops = KernelOps(fused_step=fused_step)
    ours = build_mamba(cfg, dict(lm.state_dict()), ops, name)  # lm's own tensors
    ours.ssm_state_dtype = parameter.dtype if ssm_state_dtype == "model" else torch.float32
    ops.suit_model(ours)  # as real-mamba's load does: PDL for small layers unless MAMBA_ROUTER_PDL says otherwise
    return SSMModel(
        ours,
        tokenizer,
        model_id=name,
        device=parameter.device,
        backend="real-mamba",
        checkpoint_format="mamba-ssm",
        decoder=CudaGraphDecoder(ours),
    )


def hf_mamba_model(size: str, layer: str) -> Any:
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    dims = SIZES[size]
    if layer == "Mamba1":
        cfg = MambaConfig(vocab_size=VOCAB, hidden_size=dims["d_model"], num_hidden_layers=dims["n_layer"])
        model = MambaForCausalLM(cfg)
    else:
        cfg = Mamba2Config(
            vocab_size=VOCAB,
            hidden_size=dims["d_model"],
            num_hidden_layers=dims["n_layer"],
            num_heads=dims["d_model"] * 2 // 64,
            head_dim=64,
            n_groups=1,
            state_size=128,
        )
        model = Mamba2ForCausalLM(cfg)
    return model.to("cuda", torch.bfloat16).eval()


def llama_model(size: str, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mamba_router.transformer import TransformerModel

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        max_position_embeddings=140_000,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
        **LLAMA[size],
    )
    hf = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    return TransformerModel(hf, tokenizer, model_id=f"llama-{size}", device=torch.device("cuda"))


class Path:
    """One way of running a model: prefill and generate on token ids."""

    name = ""
    decode_tokens = 64  # tokens timed per decode measurement (more for fast paths, to beat timer noise)
    repeats = 3

    def prefill(self, ids: torch.Tensor) -> Any:
        raise NotImplementedError

    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        raise NotImplementedError


class Ours(Path):
    decode_tokens = 256
    repeats = 5

    def __init__(self, lm: Any, tokenizer: Any, *, fused_step: bool = True, ssm_state_dtype: str = "model") -> None:
        self.model = ours_from_mamba_ssm(lm, tokenizer, fused_step=fused_step, ssm_state_dtype=ssm_state_dtype)
        step = "fused step" if fused_step else "unfused step"
        states = "" if ssm_state_dtype == "model" else ", float32 states"
        self.name = f"{'ours' if fused_step else 'ours-unfused'} (real-mamba, {step}{states})"

    def prefill(self, ids: torch.Tensor) -> Any:
        return self.model.stepper(ids.shape[0]).prefill(list(ids))

    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        return self.model.generate_ids(list(ids), max_new_tokens=new_tokens)


class MambaSsm(Path):
    name = "mamba-ssm generate(cg=True)"
    decode_tokens = 256
    repeats = 5

    def __init__(self, lm: Any) -> None:
        self.lm = lm

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> Any:
        return self.lm(ids, num_last_tokens=1).logits

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        return self.lm.generate(ids, max_length=ids.shape[1] + new_tokens, cg=True, top_k=1)


class HfGenerate(Path):
    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> Any:
        return self.model(ids, use_cache=True, logits_to_keep=1).logits

    @torch.inference_mode()
    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        return self.model.generate(
            ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
        )


class LlamaBackend(Path):
    name = "llama sdpa (core transformer backend)"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model._eos = []  # random weights: never stop early, so every path makes the same number of tokens

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> Any:
        return self.model.model(ids, use_cache=True, logits_to_keep=1).logits

    def generate(self, ids: torch.Tensor, new_tokens: int) -> Any:
        return self.model.generate_ids(list(ids), max_new_tokens=new_tokens)


def measure(
    path: Path, batch: int, prefill_lengths: list[int], decode_lengths: list[int], deadline: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path.name, "batch": batch}
    for length in prefill_lengths:
        if batch > 1 and length > 16_384:
            row[f"prefill_{length}"] = "skipped (batch x 128k)"
            continue
        row.update(_cell(f"prefill_{length}", deadline, lambda: _prefill(path, batch, length)))
    for length in decode_lengths:
        row.update(_cell(f"decode_{length}", deadline, lambda: _decode(path, batch, length)))
    return row


def _cell(key: str, deadline: float, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if time.monotonic() > deadline:
        return {key: "skipped (time)"}
    try:
        return {f"{key}_{k}": v for k, v in fn().items()}
    except torch.OutOfMemoryError:
        return {key: "OOM"}
    except Exception as exc:  # a failing upstream path is reported in its cell, not fatal
        return {key: f"error: {type(exc).__name__}: {str(exc)[:120]}"}
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def _ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(
        1, VOCAB - 8, (batch, length), device="cuda", generator=torch.Generator("cuda").manual_seed(length)
    )


def _prefill(path: Path, batch: int, length: int) -> dict[str, Any]:
    ids = _ids(batch, length)
    path.prefill(ids)  # warm up: kernel compilation and autotuning for this shape
    _, peak = peak_gib(lambda: path.prefill(ids))
    seconds = median_seconds(lambda: path.prefill(ids), repeats=3, warmup=0)
    return {"ms": seconds * 1000, "peak_gib": peak}


def _decode(path: Path, batch: int, length: int) -> dict[str, Any]:
    ids = _ids(batch, length)
    one = median_seconds(lambda: path.generate(ids, 1), repeats=path.repeats)
    many = median_seconds(lambda: path.generate(ids, path.decode_tokens + 1), repeats=path.repeats)
    return {"ms_per_token": (many - one) * 1000 / path.decode_tokens}


def step_bytes(lm: Any, batch: int) -> int:
    """Bytes one decoding step must move: every weight once (tied ones once), the conv and SSM states read and
    written (states in the weights' dtype, as mamba-ssm's generate keeps them)."""
    weights = {p.data_ptr(): p.numel() * p.element_size() for p in lm.parameters()}
    state = 0
    for module in lm.modules():
        if type(module).__name__ in ("Mamba", "Mamba2"):  # the mixers (blocks and the model return dicts)
            conv, ssm = module.allocate_inference_cache(batch, 1)
            state += conv.numel() * conv.element_size() + ssm.numel() * ssm.element_size()
    return sum(weights.values()) + 2 * state


def render(
    results: list[dict[str, Any]], prefill_lengths: list[int], decode_lengths: list[int], peak_tb_s: float
) -> str:
    header = ["model", "path", "batch"]
    header += [f"prefill {n // 1024}k ms" for n in prefill_lengths]
    if prefill_lengths:
        header.append(f"peak GiB {prefill_lengths[-1] // 1024}k")
    header += [f"decode ms/tok @{n // 1024}k (GB/s)" for n in decode_lengths] + ["floor ms"]
    rows = []
    for r in results:
        cells = [r["model"], r["path"], str(r["batch"])]
        for n in prefill_lengths:
            cells.append(
                fmt(r.get(f"prefill_{n}_ms"), 1) if f"prefill_{n}_ms" in r else str(r.get(f"prefill_{n}", "n/a"))
            )
        if prefill_lengths:
            last = prefill_lengths[-1]
            cells.append(fmt(r.get(f"prefill_{last}_peak_gib")) if f"prefill_{last}_peak_gib" in r else "n/a")
        moved = r.get("step_bytes")
        for n in decode_lengths:
            ms = r.get(f"decode_{n}_ms_per_token")
            if ms is None:
                cells.append(str(r.get(f"decode_{n}", "n/a")))
            else:
                cells.append(f"{ms:.3f}" + (f" ({moved / ms / 1e6:,.0f})" if moved else ""))
        cells.append(f"{moved / (peak_tb_s * 1e9):.3f}" if moved else "n/a")
        rows.append(cells)
    return markdown_table(header, rows)


def ratios(results: list[dict[str, Any]], decode_lengths: list[int]) -> list[str]:
    lines = []
    by_key = {(r["model"], r["path"].split(" ")[0], r["batch"]): r for r in results}
    for (model, path, batch), r in by_key.items():
        if path != "ours":
            continue
        for n in decode_lengths:
            ours = r.get(f"decode_{n}_ms_per_token")
            for other in ("ours-unfused", "mamba-ssm", "hf", "llama"):
                theirs = by_key.get((model, other, batch), {}).get(f"decode_{n}_ms_per_token")
                if ours and theirs:
                    lines.append(f"{model} b{batch} decode @{n // 1024}k: {other} / ours = {theirs / ours:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["130m", "1.4b"], choices=sorted(SIZES))
    parser.add_argument("--layers", nargs="+", default=["Mamba1", "Mamba2"], choices=["Mamba1", "Mamba2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--prefill", nargs="*", type=int, default=[1024, 16_384, 131_072])
    parser.add_argument("--decode", nargs="+", type=int, default=[1024, 16_384])
    parser.add_argument("--paths", nargs="+", default=["ours", "ours-unfused", "mamba-ssm", "hf", "llama"])
    parser.add_argument(
        "--ssm-state-dtype",
        choices=["model", "float32"],
        default="model",
        help="our SSM states: the weights' dtype (real-mamba's default, as mamba-ssm's generate) or float32",
    )
    parser.add_argument("--peak-tb-s", type=float, default=4.8, help="the device's memory bandwidth (H200: 4.8)")
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    tokenizer = wordlevel_tokenizer(VOCAB)
    results: list[dict[str, Any]] = []

    def save() -> None:  # after every row, so a run cut short keeps what it measured
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                record = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "args": vars(args)}
                json.dump({**record, "results": results}, f, indent=2)

    for size in args.sizes:
        for layer in args.layers:
            model_name = f"{layer} {size}"
            paths: list[Path] = []
            lm = mamba_ssm_model(size, layer)
            if "ours" in args.paths:
                paths.append(Ours(lm, tokenizer, ssm_state_dtype=args.ssm_state_dtype))
            if "ours-unfused" in args.paths:
                paths.append(Ours(lm, tokenizer, fused_step=False, ssm_state_dtype=args.ssm_state_dtype))
            if "mamba-ssm" in args.paths:
                paths.append(MambaSsm(lm))
            moved = {batch: step_bytes(lm, batch) for batch in args.batches}
            for path in paths:
                for batch in args.batches:
                    row = measure(path, batch, args.prefill, args.decode, deadline)
                    results.append({"model": model_name, "step_bytes": moved[batch], **row})
                    print(json.dumps(results[-1]), flush=True)
                    save()
            del paths, lm
            gc.collect()
            torch.cuda.empty_cache()
            if "hf" in args.paths:
                hf = HfGenerate(
                    hf_mamba_model(size, layer),
                    f"hf {'MambaForCausalLM' if layer == 'Mamba1' else 'Mamba2ForCausalLM'}",
                )
                for batch in args.batches:
                    row = measure(hf, batch, args.prefill, args.decode, deadline)
                    results.append({"model": model_name, "step_bytes": moved[batch], **row})
                    print(json.dumps(results[-1]), flush=True)
                    save()
                del hf
                gc.collect()
                torch.cuda.empty_cache()
        if "llama" in args.paths:
            llama = LlamaBackend(llama_model(size, tokenizer))
            for batch in args.batches:
                results.append({"model": f"Llama {size}", **measure(llama, batch, args.prefill, args.decode, deadline)})
                print(json.dumps(results[-1]), flush=True)
                save()
            del llama
            gc.collect()
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name(0)
    print(f"\ndevice: {device}, torch {torch.__version__}\n")
    table = render(results, args.prefill, args.decode, args.peak_tb_s)
    print(table)
    print("\n".join(ratios(results, args.decode)))
    save()


if __name__ == "__main__":
    main()
