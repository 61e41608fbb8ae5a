"""The remote backend against a third-party OpenAI-compatible server: llama.cpp's server (llama-cpp-python) serving
a tiny Mamba-2 written by transformers and converted to GGUF by llama.cpp's own converter, on 127.0.0.1.

Checks that the router, configured with the server as its ``[[remote.mamba]]`` endpoint, answers a legal question
about a document there (greedy: the same text the official openai client gets from that server for the same
message), streams the same text, reads the server's usage counts, answers in the plain format, and that a refused
endpoint before it is retried there. Too slow to build for CI (llama.cpp compiles from source); the run is
recorded in benchmarks/results.

    python benchmarks/third_party_server.py --llama-cpp /path/to/llama.cpp --server-python /path/to/venv/bin/python

``--llama-cpp``: a llama.cpp source tree (for ``convert_hf_to_gguf.py``; the llama-cpp-python sdist vendors one);
``--server-python``: a Python with ``llama-cpp-python[server]`` installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import free_port

from mamba_router import Router
from mamba_router.generation.requests import compose_context_prompt

JUDGMENT = "The appeal is allowed. The respondent shall pay the costs of the appeal within thirty days. " * 20
QUESTION = "What did the court order about the costs of the appeal?"
MODEL_NAME = "tiny-mamba2-gguf"


def write_gguf(work: Path, llama_cpp: Path) -> Path:
    """A tiny random Mamba-2 (GPT-NeoX vocabulary size, no tokenizer files: the converter uses llama.cpp's bundled
    GPT-NeoX vocabulary) saved by transformers, converted to GGUF (f32) by llama.cpp's converter."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    config = Mamba2Config(
        vocab_size=50288,
        hidden_size=64,
        num_hidden_layers=2,
        num_heads=8,
        head_dim=16,
        state_size=16,
        n_groups=1,
        expand=2,
        tie_word_embeddings=True,
    )
    model = Mamba2ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    hf_dir = work / "hf"
    model.save_pretrained(hf_dir)
    out = work / "model.gguf"
    subprocess.run(
        [
            sys.executable,
            str(llama_cpp / "convert_hf_to_gguf.py"),
            str(hf_dir),
            "--outfile",
            str(out),
            "--outtype",
            "f32",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def start_server(python: str, gguf: Path, port: int, log: Path) -> subprocess.Popen:
    command = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
    ]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"llama.cpp's server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-cpp", type=Path, required=True)
    parser.add_argument("--server-python", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="third-party-"))
    gguf = write_gguf(work, args.llama_cpp)
    port, dead_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = start_server(args.server_python, gguf, port, work / "llama-server.log")
    checks: dict[str, object] = {"gguf_bytes": gguf.stat().st_size}
    try:
        config = work / "router.toml"
        config.write_text(
            f'[log]\npath = "{work / "routing.jsonl"}"\n[remote]\nbackoff_s = 0\nretries = 1\n'
            f'[[remote.mamba]]\nurl = "{url}"\nmodel = "{MODEL_NAME}"\nname = "llama.cpp"\n'
            f'[[remote.transformer]]\nurl = "{url}"\nmodel = "{MODEL_NAME}"\nname = "llama.cpp"\n',
            encoding="utf-8",
        )
        router = Router.from_config(config, environ={})
        started = time.perf_counter()
        routed = router.generate(QUESTION, context=JUDGMENT, max_new_tokens=16)
        checks["routed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        direct = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": compose_context_prompt(QUESTION, JUDGMENT)}],
            max_tokens=16,
            temperature=0,
        )
        checks["family_backend"] = f"{routed.model_used}/{routed.backend}"
        checks["same_text_as_openai_client"] = routed.text == (direct.choices[0].message.content or "")
        checks["usage_from_server"] = routed.generation.completion_tokens == direct.usage.completion_tokens
        streamed = router.stream(QUESTION, context=JUDGMENT, max_new_tokens=16)
        checks["stream_joins_to_it"] = "".join(streamed) == routed.text
        plain = router.generate(QUESTION, context=JUDGMENT, max_new_tokens=8, prompt_format="plain")
        checks["plain_completions"] = plain.generation.device == "remote:llama.cpp"
        checks["text_sample"] = routed.text[:60]
        config.write_text(
            config.read_text(encoding="utf-8").replace(
                "[[remote.mamba]]",
                f'[[remote.mamba]]\nurl = "http://127.0.0.1:{dead_port}/v1"\nmodel = "{MODEL_NAME}"\nname = "refused"\n'
                "[[remote.mamba]]",
            ),
            encoding="utf-8",
        )
        retried = Router.from_config(config, environ={}).generate(QUESTION, context=JUDGMENT, max_new_tokens=16)
        checks["refused_endpoint_then_llama_cpp"] = (retried.generation.device, retried.text == routed.text)
    finally:
        if server.poll() is None:
            server.kill()
    print(json.dumps(checks, indent=1))
    if args.out:
        args.out.write_text(json.dumps(checks, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
