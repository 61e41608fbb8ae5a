"""The real ``mamba-router serve`` under concurrent streaming clients: throughput, inter-token latency and time to
first token, against one request at a time and against calling the model directly.

For each model (random weights, bf16 on the GPU; written to disk and served by a real server process on
127.0.0.1) and each concurrency N:

  sequential   requests one after another through the server (the one-at-a-time baseline): new documents, then
               the same documents again (their states cached: read once, ask many)
  N at once    N streaming clients at once, each with its own document: new documents (each is read, so reading
               dominates for short answers), and documents read before the clock starts
  direct       ``generate_with_state_space`` on the same checkpoint loaded in this process (no server, no engine)

and, while N requests decode, a question about a document whose state is cached and a question without a document
(their time to first token). Throughput = generated tokens / wall time; inter-token latency = a stream's time
from its first to its last piece as the client receives them over its tokens after the first (median over the
streams); per-token = the server's decode time per token after the first (from each answer's timings); engine
TTFT = from the engine's submission to its first piece; server TTFT = from the request's arrival at the server's app
(before its body is read) to the first piece handed to its stream (so client TTFT - server TTFT is the connection,
the wait in the server's event loop before the app sees the request, and the client's own delays; server TTFT -
engine TTFT is reading the body, routing and admission; medians over the streams).

    python benchmarks/bench_serving.py --models mamba2-130m mamba1-130m --concurrency 16 64 --out serving.json
    python benchmarks/bench_serving.py --tiny        # CPU smoke run: offline tiny models, short documents
    python benchmarks/bench_serving.py --client-processes 4   # the streams sent from 4 client processes
    python benchmarks/bench_serving.py --server-modes model-process   # the models in a process of their own
    python benchmarks/bench_serving.py --rounds 4   # N clients each asking 4 questions in turn: N kept in flight
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import MODELS, backend_class, column_table, document, write_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import ServerProcess


class Stream:
    """One streamed answer as the client saw it."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.arrivals: list[float] = []
        self.final: dict[str, Any] = {}
        self.status = 0

    @property
    def ttft(self) -> float | None:
        return self.arrivals[0] - self.started if self.arrivals else None

    @property
    def inter_token(self) -> float | None:
        """Seconds per token after the first, as the client received them: first to last piece over the tokens
        after the first (a piece carries several tokens when the server joins pieces a slow reader has not taken,
        so gaps between pieces would understate it)."""
        if len(self.arrivals) < 2 or self.tokens < 2:
            return None
        return (self.arrivals[-1] - self.arrivals[0]) / (self.tokens - 1)

    @property
    def tokens(self) -> int:
        return int(self.final.get("usage", {}).get("completion_tokens", 0))

    @property
    def per_token_ms(self) -> float | None:
        timings = self.final.get("mamba_router", {}).get("timings", {})
        return timings["decode_ms"] / (self.tokens - 1) if self.tokens > 1 else None


async def stream(
    http: httpx.AsyncClient, url: str, family: str, question: str, doc: str | None, new: int, out: Stream | None = None
) -> Stream:
    body = {
        "model": family,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": new,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if doc is not None:
        body["context"] = doc
    out = out or Stream()
    out.started = time.perf_counter()
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        out.status = response.status_code
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                out.arrivals.append(time.perf_counter())
            if "mamba_router" in chunk:
                out.final.update(chunk)
            if "usage" in chunk and chunk["usage"]:
                out.final["usage"] = chunk["usage"]
    return out


async def in_turn(
    http: httpx.AsyncClient, url: str, family: str, index: int, doc: str, new: int, rounds: int, outs: list[Stream]
) -> None:
    """One client's ``rounds`` questions about its document, each sent when the one before it has ended (a user who
    keeps one request in flight); each answer as the client saw it is appended to ``outs`` when it starts."""
    for r in range(rounds):
        out = Stream()
        outs.append(out)
        await stream(http, url, family, f"Q{index}.{r}?", doc, new, out)


async def sequential(url: str, family: str, docs: list[str], new: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        streams = [await stream(http, url, family, f"Question {i}?", d, new) for i, d in enumerate(docs)]
        wall = time.perf_counter() - started
    return summary(streams, wall)


async def concurrent(
    url: str,
    family: str,
    docs: list[str],
    new: int,
    cached_doc: str,
    *,
    read_first: bool = False,
    client_processes: int = 1,
    rounds: int = 1,
) -> dict[str, Any]:
    """N streams at once, each about its own document; ``read_first``: the documents are read (and their states
    cached) before the clock starts, so the streams ask about documents already read; ``client_processes``: the
    streams are sent from that many processes (one Python client process sending and parsing 64 streams can itself
    delay them); ``rounds``: each of the N clients asks that many questions about its document, one after another
    (1: a burst of N requests; more: N requests in flight, sustained)."""
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(docs) + 8)) as http:
        await stream(http, url, family, "Warm the cache.", cached_doc, 2)  # the cached document is read now
        if read_first:
            await asyncio.gather(*(stream(http, url, family, "Read it.", d, 1) for d in docs))
        before = await engine_phases(http, url)
        if client_processes > 1:
            load, decoding = await start_client_processes(url, family, docs, new, client_processes, rounds)
            started = time.perf_counter()  # the processes are started and waiting; they send from now on
        else:
            started = time.perf_counter()
            outs: list[Stream] = []
            tasks = [
                asyncio.create_task(in_turn(http, url, family, i, d, new, rounds, outs)) for i, d in enumerate(docs)
            ]
            load, decoding = _all_of(tasks, outs), lambda: any(o.arrivals for o in outs)
        while not decoding() and time.perf_counter() - started < 300:
            await asyncio.sleep(0.005)  # the probes go out once the load is decoding
        probes = await asyncio.gather(
            stream(http, url, family, "About the cached judgment?", cached_doc, 8),
            stream(http, url, family, "No document here?", None, 8),
        )
        streams = await load
        after = await engine_phases(http, url)
        # to the last piece of the last stream (time.perf_counter is the system's monotonic clock, shared by the
        # client processes), not to when the client processes exited
        wall = max((s.arrivals[-1] for s in streams if s.arrivals), default=time.perf_counter()) - started
    result = summary(streams, wall)
    result["cached_doc_ttft_ms"] = ms(probes[0].ttft)
    result["no_doc_ttft_ms"] = ms(probes[1].ttft)
    result.update(per_pass(before, after))
    return result


async def engine_phases(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The server's engine counters from /metrics: passes, and seconds by phase (summed over its engines)."""
    counters: dict[str, float] = {}
    for line in (await http.get(f"{url}/metrics")).text.splitlines():
        if line.startswith("mamba_router_engine_passes_total{"):
            counters["passes"] = counters.get("passes", 0.0) + float(line.split()[-1])
        elif line.startswith("mamba_router_engine_seconds_total{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            counters[phase] = counters.get(phase, 0.0) + float(line.split()[-1])
    return counters


def per_pass(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The engine's passes over a scenario, and the milliseconds a pass spent in each phase (admit / launch /
    wait_for_device / collect / hand_out) as one cell."""
    passes = after.get("passes", 0.0) - before.get("passes", 0.0)
    if passes <= 0:
        return {}
    phases = [k for k in after if k != "passes"]
    split = " / ".join(f"{(after[k] - before.get(k, 0.0)) * 1000 / passes:.3f}" for k in phases)
    return {"engine_passes": int(passes), "engine_pass_ms": split, "engine_phases": phases}


async def _all_of(tasks: list[asyncio.Task[None]], outs: list[Stream]) -> list[Stream]:
    await asyncio.gather(*tasks)
    return outs


async def start_client_processes(
    url: str, family: str, docs: list[str], new: int, processes: int, rounds: int = 1
) -> tuple[Any, Any]:
    """The streams split over ``processes`` client processes (this script with ``--client-child``); returns once
    every process is ready, having told them to go: an awaitable of every stream as its process saw it, and a test
    for "a stream has its first piece". The processes talk through files in a temporary folder: ``ready-K`` (set
    up, waiting), ``go`` (send now), ``decoding`` (a first piece came)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-clients-"))
    share = -(-len(docs) // processes)
    children = []
    for k in range(processes):
        part = list(enumerate(docs))[k * share : (k + 1) * share]
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client-child",
                url,
                family,
                str(new),
                str(rounds),
                str(folder / f"ready-{k}"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None
        child.stdin.write(json.dumps(part))
        child.stdin.close()
        children.append(child)
    while not all((folder / f"ready-{k}").exists() for k in range(processes)):
        await asyncio.sleep(0.005)
    (folder / "go").touch()
    marker = folder / "decoding"

    async def collect() -> list[Stream]:
        outs = await asyncio.gather(*(asyncio.to_thread(_output_of, c) for c in children))
        streams = []
        for stdout in outs:
            for seen in json.loads(stdout):
                one = Stream()
                one.started, one.arrivals, one.final, one.status = seen
                streams.append(one)
        return streams

    return collect(), marker.exists


def _output_of(child: subprocess.Popen[str]) -> str:
    """A client process's whole output, once it ended (its stdin is closed already: no communicate())."""
    assert child.stdout is not None
    out = child.stdout.read()
    if child.wait() != 0:
        raise RuntimeError(f"a client process failed with exit status {child.returncode}")
    return out


async def client_child(url: str, family: str, new: int, rounds: int, ready: Path) -> None:
    """A client process: the streams given on stdin, sent once told to go, each as it was seen, as JSON on stdout
    (see :func:`start_client_processes`)."""
    part = json.loads(sys.stdin.read())
    outs: list[Stream] = []
    marker = ready.parent / "decoding"

    async def watch() -> None:
        while not any(o.arrivals for o in outs):
            await asyncio.sleep(0.002)
        marker.touch()

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(part) + 4)) as http:
        await http.get(f"{url}/health")  # the client set up and connected before the clock starts
        ready.touch()
        while not (ready.parent / "go").exists():
            await asyncio.sleep(0.001)
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(in_turn(http, url, family, i, d, new, rounds, outs) for i, d in part))
        watcher.cancel()
    print(json.dumps([[o.started, o.arrivals, o.final, o.status] for o in outs]))


def summary(streams: list[Stream], wall: float) -> dict[str, Any]:
    ok = [s for s in streams if s.status == 200]
    tokens = sum(s.tokens for s in ok)
    inter_token = [t for s in ok if (t := s.inter_token) is not None]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    per_token = [p for s in ok if (p := s.per_token_ms) is not None]
    times = [_request_times(s) for s in sorted(ok, key=lambda s: s.started)]

    def median_of(key: str) -> float | None:
        values = [t[key] for t in times if t[key] is not None]
        return round(statistics.median(values), 2) if values else None

    return {
        "requests": len(streams),
        # each answered request's times (ms), in the order they started, for distributions beyond the medians
        "per_request_ms": times,
        "ok": len(ok),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1) if wall else None,
        "itl_median_ms": ms(statistics.median(inter_token)) if inter_token else None,
        "ttft_median_ms": ms(statistics.median(ttfts)) if ttfts else None,
        # from the engine's submission to its first piece: the rest of the client's TTFT is HTTP and routing
        "engine_ttft_median_ms": median_of("engine_ttft"),
        "server_ttft_median_ms": median_of("server_first_piece"),
        # from the request's arrival at the server to the route known there (the body read, the trip to the model
        # process, the router's decision and the way back), and the decision alone (in the model process)
        "server_route_median_ms": median_of("server_route"),
        "decide_median_ms": median_of("decide"),
        # from the engine's submission to its first token chosen (the queue, the prompt read or stepped in); the
        # rest of the engine TTFT is that token becoming text
        "engine_prefill_median_ms": median_of("engine_first_token"),
        # from the engine's submission to taking the request from its queue (part of the engine TTFT)
        "engine_queue_median_ms": median_of("engine_queue"),
        "server_per_token_ms": round(statistics.median(per_token), 3) if per_token else None,
    }


def _request_times(stream: Stream) -> dict[str, float | None]:
    """One answer's times: the client's TTFT, the server's (route, first piece), the router's decision and the
    engine's (queue, first token chosen, first text)."""
    info = stream.final.get("mamba_router", {})
    server, timings = info.get("server_timings", {}), info.get("timings", {})
    return {
        "client_ttft": ms(stream.ttft),
        "server_route": server.get("route_ms"),
        "server_first_piece": server.get("first_piece_ms"),
        "decide": info.get("decide_ms"),
        "engine_queue": timings.get("queue_ms"),
        "engine_first_token": timings.get("prefill_ms"),
        "engine_ttft": timings.get("time_to_first_token_ms"),
    }


def print_profile(path: Path, top: int = 30) -> None:
    """The server's event-loop thread: where its time went (cProfile, by own time), also written beside ``path``."""
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("tottime").print_stats(top)
    path.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    print(f"--- server event loop profile ({path}) ---\n{text.getvalue()}", flush=True)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def direct(directory: Path, backend: str, dtype: str, docs: list[str], new: int) -> dict[str, Any]:
    """``generate_with_state_space`` on the checkpoint loaded in this process: decode ms per token after the first."""
    model = backend_class(backend)().load(str(directory), device=None, dtype=dtype)
    model.generate_with_state_space("Warm up?", context=docs[0], max_new_tokens=4)
    per_token = []
    for i, doc in enumerate(docs):
        result = model.generate_with_state_space(f"Question {i}?", context=doc, max_new_tokens=new)
        if result.completion_tokens > 1:
            per_token.append(result.timings.decode_ms / (result.completion_tokens - 1))
    del model
    return {"direct_per_token_ms": round(statistics.median(per_token), 3) if per_token else None}


class ProcessBusy:
    """How busy the server's process and its model process (``serve.model_process``) were over a scenario: CPU
    seconds over wall seconds (1.0 = one core all the time; a Python process's threads share one GIL, so near 1.0
    the process is as busy as Python lets it be)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.server = psutil.Process(pid)
        self.started = time.perf_counter()
        self.before = {p.pid: _cpu_seconds(p) for p in self._processes()}

    def _processes(self) -> list[Any]:
        return [self.server, *self.server.children(recursive=True)]

    def shares(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        used = {p.pid: _cpu_seconds(p) - self.before.get(p.pid, 0.0) for p in self._processes()}
        server = used.pop(self.server.pid)
        models = max(used.values(), default=0.0)  # the model process (the other child is multiprocessing's tracker)
        return {"server_cpu": round(server / wall, 2), "model_process_cpu": round(models / wall, 2) if used else None}


def _cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def serve_and_measure(
    name: str,
    directory: Path,
    family: str,
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
    mode: str = "one-process",
    *,
    with_direct: bool = True,
) -> list[dict[str, Any]]:
    """The scenarios on one model, served with the models in the server's process (``mode`` one-process) or in a
    model process of their own (model-process: ``serve.model_process``)."""
    backend = env.get("MAMBA_ROUTER__MAMBA__BACKEND", "real-mamba") if family == "mamba" else "transformer"
    key = "real_model" if backend == "real-mamba" else "mamba2_model"
    mamba_dir = directory if family == "mamba" else args.fallback_mamba
    config = work / f"{name}.toml"
    config.write_text(
        f'[mamba]\n{key} = "{mamba_dir}"\n[transformer]\nmodel = "{directory if family == "transformer" else args.fallback_transformer}"\n'
        f'[generation]\ndtype = "{args.dtype}"\nprompt_format = "plain"\n'
        f'[log]\npath = "{work / (name + ".jsonl")}"\n[limits]\nmax_body_bytes = 1000000000\n'
        f"[serve]\nmax_batch = {max(args.concurrency)}\nmax_queue = 1024\n"
        f"model_process = {str(mode == 'model-process').lower()}\n",
        encoding="utf-8",
    )
    rows = []
    lone_docs = [document(args.doc_tokens, 1000 + i) for i in range(args.lone_requests)]
    profile = args.profile_server / f"{name}.{mode}.server.prof" if args.profile_server else None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(config, env=env, profile=profile)
    try:
        warm_doc = [document(args.doc_tokens, 999)]
        warm = asyncio.run(sequential(server.url, family, warm_doc, 4))  # engine graphs captured, kernels tuned
        if not warm["ok"]:
            raise RuntimeError(f"the warm-up request failed: {warm}")
        base = asyncio.run(sequential(server.url, family, lone_docs, args.new_tokens))
        rows.append({"model": name, "server": mode, "scenario": "sequential, new documents", **base})
        # the same documents again: their states are cached now (read once, ask many)
        base_cached = asyncio.run(sequential(server.url, family, lone_docs, args.new_tokens))
        rows.append({"model": name, "server": mode, "scenario": "sequential, documents read before", **base_cached})
        for n in args.concurrency:
            kinds = ((False, base), (True, base_cached))
            for read_first, baseline in [k for k in kinds if args.documents in ("both", DOCUMENT_KINDS[k[0]])]:
                docs = [document(args.doc_tokens, 10_000 * n + 1_000 * read_first + i) for i in range(n)]
                busy = ProcessBusy(server.process.pid)
                measured = asyncio.run(
                    concurrent(
                        server.url,
                        family,
                        docs,
                        args.new_tokens,
                        document(args.doc_tokens, 7),
                        read_first=read_first,
                        client_processes=args.client_processes,
                        rounds=args.rounds,
                    )
                )
                measured.update(busy.shares())
                measured["speedup_vs_sequential"] = (
                    round(measured["tokens_per_s"] / baseline["tokens_per_s"], 2) if baseline["tokens_per_s"] else None
                )
                measured["itl_vs_lone"] = (
                    round(measured["itl_median_ms"] / baseline["itl_median_ms"], 2)
                    if measured["itl_median_ms"] and baseline["itl_median_ms"]
                    else None
                )
                kind = "documents read before" if read_first else "new documents"
                clients = f"{n} at once" if args.rounds == 1 else f"{n} at once x {args.rounds} rounds"
                rows.append({"model": name, "server": mode, "scenario": f"{clients}, {kind}", **measured})
    except Exception:
        print(
            f"--- server log of {name} (last 60 lines) ---\n" + "\n".join(server.output().splitlines()[-60:]),
            flush=True,
        )
        raise
    finally:
        server.stop()
        if profile is not None and profile.exists():
            print_profile(profile)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            (args.logs / f"{name}.{mode}.server.log").write_text(server.output(), encoding="utf-8")
    if with_direct:
        rows[0].update(direct(directory, backend, args.dtype, lone_docs, args.new_tokens))
    return rows


DOCUMENT_KINDS = {False: "new", True: "read-before"}
# One Python client process sending 64 streams of 12k-token documents delays its own requests: on the CPU box its
# requests reached the server 25-30 ms apart, over 1.4 s (2026-12-03-cpu-serving-admission.md), so the concurrent
# streams come from several processes where the cores allow.
DEFAULT_CLIENT_PROCESSES = max(1, min(4, (os.cpu_count() or 1) // 4))  # read_first -> --documents choice

COLUMNS = [  # (header, key)
    ("model", "model"),
    ("server", "server"),
    ("scenario", "scenario"),
    ("ok", "ok"),
    ("tokens/s", "tokens_per_s"),
    ("x sequential", "speedup_vs_sequential"),
    ("ITL median ms", "itl_median_ms"),
    ("ITL x lone", "itl_vs_lone"),
    ("TTFT median ms", "ttft_median_ms"),
    ("server TTFT ms", "server_ttft_median_ms"),
    ("server route ms", "server_route_median_ms"),
    ("decide ms", "decide_median_ms"),
    ("engine TTFT ms", "engine_ttft_median_ms"),
    ("engine queue ms", "engine_queue_median_ms"),
    ("engine first token ms", "engine_prefill_median_ms"),
    ("engine passes", "engine_passes"),
    ("engine ms a pass: admit / launch / wait for device / collect / hand out", "engine_pass_ms"),
    ("server ms/token", "server_per_token_ms"),
    ("direct ms/token", "direct_per_token_ms"),
    ("cached-doc TTFT ms", "cached_doc_ttft_ms"),
    ("no-doc TTFT ms", "no_doc_ttft_ms"),
    ("server CPU", "server_cpu"),
    ("model process CPU", "model_process_cpu"),
]


def render(rows: list[dict[str, Any]]) -> str:
    return column_table(COLUMNS, rows)


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--client-child":  # one of the client processes (client_child)
        asyncio.run(client_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mamba2-130m"], choices=sorted(MODELS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[16, 64])
    parser.add_argument(
        "--documents", choices=["both", "new", "read-before"], default="both", help="which concurrent scenarios run"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=DEFAULT_CLIENT_PROCESSES,
        help="send the concurrent streams from this many processes (default: a quarter of the cores, 1 to 4)",
    )
    parser.add_argument(
        "--server-modes",
        nargs="+",
        choices=["one-process", "model-process"],
        default=["one-process", "model-process"],
        help="serve the models in the server's process, in a model process of their own (serve.model_process), or "
        "both, one after the other",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="each of the N clients asks this many questions about its document, one after another (1: a burst of N "
        "requests, whose admission counts in full; more: N requests kept in flight; the new-documents scenario reads "
        "each document in its first round only)",
    )
    parser.add_argument("--doc-tokens", type=int, default=12_000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--lone-requests", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--state-cache-gib", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on `mamba-router init`'s offline models")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=None, help="keep each server's log here")
    parser.add_argument(
        "--profile-server", type=Path, default=None, help="run each server under cProfile (its event loop) into here"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    # every document's state stays cached (64 states of a 1.4B Mamba are a few GB)
    env = {"PYTHONUNBUFFERED": "1", "MAMBA_ROUTER__MAMBA__STATE_CACHE_BYTES": str(args.state_cache_gib << 30)}
    rows: list[dict[str, Any]] = []
    if args.tiny:
        subprocess.run([sys.executable, "-m", "mamba_router", "init", str(work / "tiny")], check=True)
        args.dtype, args.fallback_mamba, args.fallback_transformer = (
            "float32",
            work / "tiny/mamba",
            work / "tiny/transformer",
        )
        env["MAMBA_ROUTER__MAMBA__BACKEND"] = "mamba2"
        for name, directory, family in (("tiny-mamba2", work / "tiny/mamba", "mamba"),):
            for i, mode in enumerate(args.server_modes):
                rows += serve_and_measure(name, directory, family, args, work, env, mode, with_direct=i == 0)
    else:
        written = {name: write_model(name, work / name) for name in args.models}
        mambas = [d for d, f in written.values() if f == "mamba"]
        transformers = [d for d, f in written.values() if f == "transformer"]
        args.fallback_mamba = mambas[0] if mambas else written[args.models[0]][0]
        args.fallback_transformer = transformers[0] if transformers else write_model("llama-130m", work / "llama")[0]
        for name, (directory, family) in written.items():
            for i, mode in enumerate(args.server_modes):
                try:
                    rows += serve_and_measure(name, directory, family, args, work, env, mode, with_direct=i == 0)
                except Exception as exc:  # one model's failure is reported; the others still run
                    rows.append(
                        {"model": name, "server": mode, "scenario": f"failed: {type(exc).__name__}: {exc}"[:200]}
                    )
                print(render(rows), flush=True)
    device = "cpu"
    try:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    print(f"\ndevice: {device}; documents {args.doc_tokens} tokens, {args.new_tokens} new tokens, {args.dtype}")
    print(render(rows))
    if args.out:
        args.out.write_text(
            json.dumps(
                {"device": device, "args": vars(args) | {"out": str(args.out)}, "rows": rows}, default=str, indent=1
            )
        )
    os.environ.pop("MAMBA_ROUTER_CONFIG", None)


if __name__ == "__main__":
    main()
