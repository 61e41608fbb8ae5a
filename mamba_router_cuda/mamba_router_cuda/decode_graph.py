"""Decoding on mamba-ssm models: eager prefill into a static state cache, then one CUDA-graph replay per token.

A Mamba model's whole decoding state is a conv state and an SSM state per layer, of fixed size. They live in a
cache allocated once per batch size; the prefill writes them in place and the captured single-token step reads and
updates them in place, so a replay launches the whole model step with one call. Graphs are kept per batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class DecodeGraph:
    """The state cache and the captured one-token step of one batch size."""

    def __init__(self, model: Any, batch_size: int, *, use_graph: bool = True, warmups: int = 2) -> None:
        from mamba_ssm.utils.generation import InferenceParams

        self.model = model
        self.batch_size = batch_size
        parameter = next(model.parameters())
        self.cache = model.allocate_inference_cache(batch_size, 1, dtype=parameter.dtype)
        self.params = InferenceParams(max_seqlen=1, max_batch_size=batch_size, key_value_memory_dict=self.cache)
        self.tokens = torch.zeros(batch_size, 1, dtype=torch.long, device=parameter.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        if use_graph:
            self._capture(warmups)

    @torch.inference_mode()
    def _capture(self, warmups: int) -> None:
        self.params.seqlen_offset = 1  # any offset > 0 selects the single-token step
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmups):
                self.model(self.tokens, inference_params=self.params, num_last_tokens=1)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.model(self.tokens, inference_params=self.params, num_last_tokens=1).logits

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Read the prompts into the state cache; return the next-token logits (batch, padded vocab)."""
        from mamba_ssm.utils.generation import InferenceParams

        if len({int(p.numel()) for p in prompts}) == 1:
            self.params.seqlen_offset = 0
            logits = self.model(torch.stack(list(prompts)), inference_params=self.params, num_last_tokens=1).logits
        else:  # no padding in a recurrence: read each prompt alone, then move its state into its batch slot
            rows = []
            for slot, prompt in enumerate(prompts):
                single = InferenceParams(max_seqlen=1, max_batch_size=1)
                rows.append(self.model(prompt.view(1, -1), inference_params=single, num_last_tokens=1).logits)
                for layer, (conv, ssm) in single.key_value_memory_dict.items():
                    self.cache[layer][0][slot].copy_(conv[0])
                    self.cache[layer][1][slot].copy_(ssm[0])
            logits = torch.cat(rows)
        self.params.seqlen_offset = 1
        return logits[:, -1, :]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence; return the next-token logits. The result is overwritten by the next step."""
        self.tokens.copy_(tokens.view(self.batch_size, 1))
        if self.graph is None:
            return self.model(self.tokens, inference_params=self.params, num_last_tokens=1).logits[:, -1, :]
        self.graph.replay()
        assert self.logits is not None
        return self.logits[:, -1, :]


class StateContinuation:
    """Decoding that starts from a read document's states: they are copied into the graph's static cache (the
    document's own tensors stay untouched), the question is fed token by token through the captured step (mamba-ssm
    has no multi-token forward from a non-zero state), then decoding goes on as usual."""

    def __init__(
        self, graph: DecodeGraph, conv: Sequence[torch.Tensor], ssm: Sequence[torch.Tensor], vocab_size: int
    ) -> None:
        self.graph = graph
        self.conv = conv
        self.ssm = ssm
        self.vocab_size = vocab_size

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        (prompt,) = prompts
        for layer, (conv, ssm) in enumerate(zip(self.conv, self.ssm)):
            self.graph.cache[layer][0].copy_(conv)
            self.graph.cache[layer][1].copy_(ssm)
        self.graph.params.seqlen_offset = 1
        logits = None
        for token in prompt.view(-1):
            logits = self.graph.step(token.view(1))
        assert logits is not None, "the question has no tokens"
        return logits[:, : self.vocab_size]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.graph.step(tokens)[:, : self.vocab_size]


class VocabStepper:
    """Wraps a DecodeGraph so that logits cover only the tokenizer's vocabulary (not the padded rows)."""

    def __init__(self, graph: DecodeGraph, vocab_size: int) -> None:
        self.graph = graph
        self.vocab_size = vocab_size

    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.graph.prefill(prompts)[:, : self.vocab_size]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.graph.step(tokens)[:, : self.vocab_size]
