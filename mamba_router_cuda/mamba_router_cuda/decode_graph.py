"""Decoding through CUDA graphs: eager prefill into a static state cache, then one graph replay per token.

A Mamba model's whole decoding state is a conv state and an SSM state per layer, of fixed size. They live in a
cache allocated once per batch size; the prefill writes them in place and the captured single-token step
(:meth:`~mamba_router.models.mamba.MambaLM.step` on mamba-ssm's kernels) reads and updates them in place, so a replay
launches the whole model step with one call. Graphs are kept per batch size; their buffers serve one generation at
a time (the loaded model holds a lock while one runs).

A hybrid's attention layers add keys and values that grow with the text. Its prompt is read into an ordinary cache,
then loaded into a *static* one (:meth:`~mamba_router.models.ssm_cache.SSMCache.static_copy`: key/value buffers of
fixed capacity, the length on the device), on which the step is captured; when decoding fills the buffers they are
copied into larger ones and the step is captured again, so captures happen a few times per long generation, not per
token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mamba_router.generation.ssm_model import prefill
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.stack import LayerStack

SYNC_EVERY_TOKENS = 16  # tokens read back per host sync when not streaming
ROOM_AFTER_PROMPT = 1024  # positions of key/value room a hybrid's static cache gets beyond the prompt
CAPACITY_QUANTUM = 1024  # static key/value buffers are a multiple of this many positions


def capacity_for(positions: int) -> int:
    """Static key/value capacity for ``positions``: a quarter more, rounded up to the quantum."""
    return math.ceil(positions * 1.25 / CAPACITY_QUANTUM) * CAPACITY_QUANTUM


class DecodeGraph:
    """The state cache and the captured one-token step of one batch size."""

    def __init__(
        self,
        model: LayerStack,
        batch_size: int,
        *,
        use_graph: bool = True,
        warmups: int = 2,
        cache: SSMCache | None = None,
    ) -> None:
        """``cache``: states to step in place (e.g. views of the first rows of a larger batch's); new ones if None."""
        self.model = model
        self.batch_size = batch_size
        self.use_graph = use_graph
        self.warmups = warmups
        self.cache = cache if cache is not None else model.new_cache(batch_size)
        self.static = bool(self.cache.keys)  # attention layers: captured once a prompt is loaded (see load)
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=model.lm_head.weight.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        if use_graph and not self.static:
            self._capture()

    @torch.inference_mode()
    def load(self, read: SSMCache, room: int) -> None:
        """Hybrids: make the static cache hold ``read`` (what a prefill wrote) with room for ``room`` more positions,
        in place when it fits, else in larger buffers on which the step is captured again."""
        if self.cache.length is None or self.cache.kv_capacity < read.tokens + room:
            self.cache = read.static_copy(capacity_for(read.tokens + room))
            if self.use_graph:
                self._capture()
        else:
            self.cache.load(read)

    @torch.inference_mode()
    def _capture(self) -> None:
        saved = self.cache.clone()  # warm-up steps change the states: put them back
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmups):  # compiles and tunes the Triton kernels outside the capture
                self.model.step(self.tokens, self.cache)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (tokenizing, copying prompts to the GPU) may use CUDA while this one captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = self.model.step(self.tokens, self.cache)
        if self.static:
            self.cache.load(saved)
        else:
            self.cache.copy_from(saved)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence; return the next-token logits. The result is overwritten by the next step."""
        if self.static and self.cache.tokens + 1 > self.cache.kv_capacity:
            self.load(self.cache.clone(), room=max(self.cache.tokens // 4, ROOM_AFTER_PROMPT))
        self.tokens.copy_(tokens.view(self.batch_size))
        if self.graph is None:
            return self.model.step(self.tokens, self.cache)
        self.graph.replay()
        self.cache.tokens += 1  # the graph advanced the states (and a static cache's device length)
        assert self.logits is not None
        return self.logits


class GraphStepper:
    """A token stepper on a :class:`DecodeGraph`: prefill into its cache (optionally from a document's state)."""

    def __init__(self, graph: DecodeGraph, start: SSMCache | None) -> None:
        self.graph = graph
        self.cache = graph.cache
        self.start = start

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.graph.static:
            return prefill(self.graph.model, self.cache, prompts, start=self.start)
        read = self.graph.model.new_cache(len(prompts))
        logits = prefill(self.graph.model, read, prompts, start=self.start)
        self.graph.load(read, ROOM_AFTER_PROMPT)
        self.cache = self.graph.cache
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.graph.step(tokens)


class CudaGraphDecoder:
    """Steppers that replay a captured step; one graph (and cache) per batch size, captured on first use."""

    shares_buffers = True
    sync_every = SYNC_EVERY_TOKENS
    segment: int | None = None  # the kernels read a whole prompt in one pass
    # a replayed step costs about 0.5 ms at 130M where launching the prompt kernels costs about 2 ms a layer (50 ms
    # for 24 layers, whatever the length; benchmarks/profile_engine.py on the H200): short prompts are stepped in
    stepped_prompt_tokens = 64
    # a prompt read costs about the same host time up to many thousand tokens (the launches, not the GPU, bound it:
    # 41 ms for 12k tokens at 130M), so a long document is read in few large pieces
    prefill_budget = 16384

    def __init__(self, model: LayerStack, *, use_graph: bool = True) -> None:
        self.model = model
        self.use_graph = use_graph
        self._graphs: dict[int, DecodeGraph] = {}

    def graph(self, batch_size: int) -> DecodeGraph:
        """The cache and captured step for ``batch_size`` (captured on first use, then reused)."""
        graph = self._graphs.get(batch_size)
        if graph is None:
            graph = DecodeGraph(self.model, batch_size, use_graph=self.use_graph)
            self._graphs[batch_size] = graph
        return graph

    def stepper(self, batch_size: int, start: SSMCache | None = None) -> GraphStepper:
        return GraphStepper(self.graph(batch_size), start)

    def slot_stepper(self, rows: int, cache: SSMCache | None = None) -> DecodeGraph:
        """A graph of its own for the batching engine's rows (captured now, or when a hybrid's rows are loaded)."""
        return DecodeGraph(self.model, rows, use_graph=self.use_graph, cache=cache)

    def reset(self) -> None:
        """Drop the captured graphs (the weights changed); they are captured again on next use."""
        self._graphs.clear()
