"""The Mamba family: Mamba-1 and Mamba-2 language models, one layer stack for every backend.

Checkpoints in two formats load into it: mamba-ssm's (``MambaLMHeadModel.save_pretrained``: ``config.json`` with
``d_model``/``ssm_cfg`` and ``pytorch_model.bin`` or ``model.safetensors``) and HF transformers'
(``MambaForCausalLM``/``Mamba2ForCausalLM``). Parameter names follow mamba-ssm; transformers' differ only in
``backbone.embeddings`` (:data:`WEIGHT_NAMES`).

The stack keeps a residual stream as mamba-ssm does (float32 when the config says ``residual_in_fp32``):
``normed, residual = add_rms_norm(hidden, residual)``, then ``hidden = mixer(normed)``, layer after layer. Every
layer reads and writes its state in an :class:`~mamba_router.models.ssm_cache.SSMCache`, so a prompt can be read in
segments (memory bounded by the segment) and decoding is one :meth:`MambaLM.step` per token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mamba_router.models.checkpoint import WeightNames, load_weights, read_weights
from mamba_router.models.layers.fused_input import BlockInput
from mamba_router.models.layers.mamba1 import Mamba1Mixer
from mamba_router.models.layers.mamba2 import Mamba2Mixer
from mamba_router.models.layers.norms import RMSNorm
from mamba_router.models.layers.padded_rows import pads_keep_state
from mamba_router.models.mamba_config import SSMConfig, config_from_json
from mamba_router.models.ops import SSMOps, fused_step_ops
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack

WEIGHT_NAMES = WeightNames(
    renames=(("backbone.embeddings.", "backbone.embedding."),),
    tied=(("lm_head.weight", "backbone.embedding.weight"),),
)
LORA_TARGETS = {"mamba1": ("in_proj", "x_proj", "dt_proj", "out_proj"), "mamba2": ("in_proj", "out_proj")}


class MambaBlock(nn.Module):
    """A pre-norm residual block: the norm's weight and a Mamba-1 or Mamba-2 mixer."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer: Mamba1Mixer | Mamba2Mixer = Mamba2Mixer(cfg) if cfg.arch == "mamba2" else Mamba1Mixer(cfg)


class Backbone(nn.Module):
    """Embedding, blocks, final norm (mamba-ssm's ``backbone``)."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)

    def blocks(self) -> Iterator[MambaBlock]:
        """The blocks, in order."""
        for layer in self.layers:
            yield cast(MambaBlock, layer)


class MambaLM(LayerStack):
    """A Mamba-1 or Mamba-2 language model whose numerics are the ``ops`` of a backend.

    ``ssm_state_dtype`` is the dtype of the SSM states in new caches: float32 (the default, most exact) or the
    weights' dtype (what mamba-ssm, transformers and vLLM keep by default: half the state's memory).
    """

    def __init__(self, cfg: SSMConfig, ops: SSMOps, *, ssm_state_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(ops, ssm_state_dtype)
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    @property
    def reads_padded_rows(self) -> bool:
        """True: rows of different lengths can be read as one right-padded batch (``forward(..., lengths=)``)."""
        return pads_keep_state(self.cfg.dt_limit)

    @property
    def lora_targets(self) -> list[str]:
        """The projections LoRA adapts by default: Mamba-1 in/x/dt/out_proj, Mamba-2 in/out_proj."""
        return list(LORA_TARGETS[self.cfg.arch])

    def new_cache(self, batch_size: int) -> SSMCache:
        """Empty states for ``batch_size`` sequences on the model's device (conv in its dtype, SSM in
        ``ssm_state_dtype``)."""
        weight = self.lm_head.weight
        conv, ssm = [], []
        for layer in self.backbone.blocks():
            conv_shape, ssm_shape = layer.mixer.state_shapes()
            conv.append(torch.zeros(batch_size, *conv_shape, device=weight.device, dtype=weight.dtype))
            ssm.append(torch.zeros(batch_size, *ssm_shape, device=weight.device, dtype=self.ssm_state_dtype))
        return SSMCache(conv, ssm)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: SSMCache | None = None,
        *,
        last_only: bool = False,
        chunk_size: int | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ``input_ids`` (b, l): (b, l, vocab), or (b, vocab) of the last position with ``last_only``.

        With a ``cache`` the tokens continue what it holds (nothing, when it is new), and its states are updated in
        place; without one the model starts from empty states and keeps none. ``lengths`` (b,), with a cache: row i
        holds ``lengths[i]`` real tokens and then right padding, which leaves its states as they were; ``last_only``
        then gives each row's last real position (see :mod:`~mamba_router.models.layers.padded_rows`).
        """
        if lengths is not None and (cache is None or not self.reads_padded_rows):
            raise ValueError("rows of different lengths are read into a cache, by a model whose padding keeps states")
        chunk = chunk_size or self.cfg.chunk_size
        continuing = cache is not None and cache.tokens > 0
        hidden, residual = self.backbone.embedding(input_ids), None
        for i, layer in enumerate(self.backbone.blocks()):
            normed, residual = self.ops.add_rms_norm(
                hidden, residual, layer.norm.weight, layer.norm.eps, residual_in_fp32=self.cfg.residual_in_fp32
            )
            hidden = layer.mixer(
                normed,
                self.ops,
                cache.conv[i] if cache is not None else None,
                cache.ssm[i] if cache is not None else None,
                continuing=continuing,
                chunk_size=chunk,
                lengths=lengths,
            )
        if cache is not None:
            cache.tokens += int(input_ids.shape[1])
        assert residual is not None, "the model has no layers"
        if last_only and lengths is not None:
            last = (lengths - 1).clamp(min=0)
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            hidden, residual = hidden[rows, last], residual[rows, last]
        elif last_only:
            hidden, residual = hidden[:, -1], residual[:, -1]
        return self.lm_head(self._final_norm(hidden, residual))

    def step(self, tokens: torch.Tensor, cache: SSMCache) -> torch.Tensor:
        """Feed one token per sequence (b,); return the next-token logits (b, vocab). States update in place.

        Touches no Python-side state, so it can be captured once in a CUDA graph and replayed.
        """
        fused = fused_step_ops(self.ops, tokens.shape[0])
        hidden, residual = self.backbone.embedding(tokens), None
        for i, layer in enumerate(self.backbone.blocks()):
            if fused is not None and layer.mixer.fuses_with(fused):  # the block's norm runs in in_proj's kernel
                block = BlockInput(residual, layer.norm, self.cfg.residual_in_fp32)
                hidden, residual = layer.mixer.fused_step(hidden, fused, cache.conv[i], cache.ssm[i], block)
                continue
            normed, residual = self.ops.add_rms_norm(
                hidden, residual, layer.norm.weight, layer.norm.eps, residual_in_fp32=self.cfg.residual_in_fp32
            )
            hidden = layer.mixer.step(normed, self.ops, cache.conv[i], cache.ssm[i])
        assert residual is not None, "the model has no layers"
        return self.lm_head(self._final_norm(hidden, residual))

    def _final_norm(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.backbone.norm_f
        normed, _ = self.ops.add_rms_norm(
            hidden, residual, norm.weight, norm.eps, residual_in_fp32=self.cfg.residual_in_fp32
        )
        return normed


def build_mamba(cfg: SSMConfig, state: dict[str, torch.Tensor], ops: SSMOps, where: str) -> MambaLM:
    """A MambaLM holding ``state``'s tensors (checkpoint names of either format); every mismatch is an error naming it.

    The stack is built on the meta device and the checkpoint's tensors become its parameters, so loading costs the
    checkpoint's memory once, in its own dtype (not a float32 copy first); move it with ``.to(device, dtype)``.
    """
    with torch.device("meta"):
        model = MambaLM(cfg, ops)
    load_weights(model, state, WEIGHT_NAMES, tie=cfg.tie_embeddings, where=where, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
    return model.eval()


def load_mamba_directory(directory: Path, config: dict[str, Any], ops: SSMOps) -> tuple[MambaLM, str]:
    """Load a checkpoint directory of either format (``config``: its parsed config.json); return the model and the
    format's name."""
    cfg, fmt = config_from_json(config, str(directory / "config.json"))
    return build_mamba(cfg, read_weights(directory), ops, str(directory)), fmt


def mamba_ssm_config(cfg: SSMConfig, vocab_size: int) -> dict[str, Any]:
    """``cfg`` as mamba-ssm's ``config.json`` (``MambaConfig`` fields)."""
    ssm_cfg: dict[str, Any] = {
        "layer": "Mamba2" if cfg.arch == "mamba2" else "Mamba1",
        "d_state": cfg.d_state,
        "d_conv": cfg.d_conv,
        "expand": cfg.expand,
    }
    if cfg.arch == "mamba2":
        ssm_cfg.update(headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size)
    return {
        "d_model": cfg.d_model,
        "d_intermediate": 0,
        "n_layer": cfg.n_layer,
        "vocab_size": vocab_size,
        "ssm_cfg": ssm_cfg,
        "rms_norm": True,
        "residual_in_fp32": cfg.residual_in_fp32,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": cfg.tie_embeddings,
    }


def save_mamba_ssm_format(model: MambaLM, directory: Path, vocab_size: int) -> Path:
    """Write ``config.json`` in mamba-ssm's format and ``model.safetensors`` (tied tensors stored once)."""
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    config = mamba_ssm_config(model.cfg, vocab_size)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_model(model, str(directory / "model.safetensors"))
    return directory


def random_mamba(cfg: SSMConfig, ops: SSMOps, *, seed: int = 0) -> MambaLM:
    """A random-weight model for demos and tests, with time steps initialised as mamba-ssm initialises them."""
    torch.manual_seed(seed)
    model = MambaLM(cfg, ops)
    with torch.no_grad():
        for layer in model.backbone.blocks():
            if isinstance(layer.mixer, Mamba2Mixer):
                layer.mixer.dt_bias.uniform_(-4.0, -2.0)  # softplus^-1 of dt around 0.02-0.13
    return model
