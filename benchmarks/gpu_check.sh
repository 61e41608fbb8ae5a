#!/usr/bin/env bash
# One call on the GPU machine: install the kernel wheels and this project, run the GPU tests with and without
# causal-conv1d (and the Mamba-1 kernel), `mamba-router info`, then the real-mamba and document-state benchmarks.
#   usage: bash benchmarks/gpu_check.sh [tests|bench|families|serving|engine|fused|decode|all] [benchmark args...]
#   families: the deployed-family shapes (FalconMamba, Codestral, Granite-4.0-H) vs transformers (bench_families.py)
#   serving: the real server under concurrent streaming clients (bench_serving.py)
#   engine: the batching engine's GPU tests, then the engine alone (bench_engine.py)
#   fused: the fused decode step's tests (and the real-mamba and family suites it runs under)
#   decode: bench_real_mamba.py alone (fused and unfused step, mamba-ssm, HF, Llama), with the benchmark's args
# Expects .wheels/ (mamba-ssm, causal-conv1d) and .whl/ (pydantic + this project's wheels) carried along.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"; shift || true
out="${OUT:-/tmp/mamba-router-out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile .wheels/*.whl .whl/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
if [ "$what" = tests ] || [ "$what" = all ]; then
    mamba-router info | tee "$out/info.txt"
    python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt" | tail -25 || status=1
    MAMBA_ROUTER_TEST_HIDE_MODULES=causal_conv1d,causal_conv1d_cuda,selective_scan_cuda \
        python3 -m pytest -q -x -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/tests_no_causal_conv1d.txt" | tail -15 || status=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    (cd benchmarks && python3 bench_real_mamba.py --out "$out/bench_real_mamba.json" "$@") 2>&1 | tee "$out/bench.txt" || status=1
    (cd benchmarks && python3 bench_document_state.py --out "$out/bench_document_state.json") 2>&1 | tee "$out/bench_document_state.txt" || status=1
fi
if [ "$what" = serving ]; then
    (cd benchmarks && python3 bench_serving.py --out "$out/bench_serving.json" "$@") 2>&1 | tee "$out/bench_serving.txt" || status=1
fi
if [ "$what" = engine ]; then
    python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_engine_gpu.py 2>&1 | tee "$out/tests_engine.txt" | tail -15 || status=1
    (cd benchmarks && python3 bench_engine.py --out "$out/bench_engine.json" "$@") 2>&1 | tee "$out/bench_engine.txt" || status=1
fi
if [ "$what" = fused ]; then
    timeout 520 python3 -m pytest -q -p no:cacheprovider tests/test_fused_step.py tests/test_fused_step_gpu.py \
        tests/test_real_mamba_gpu.py tests/test_families_gpu.py 2>&1 | tee "$out/tests_fused.txt" | tail -25 || status=1
fi
if [ "$what" = decode ]; then
    (cd benchmarks && python3 bench_real_mamba.py --out "$out/bench_real_mamba.json" "$@") 2>&1 | tee "$out/bench.txt" || status=1
fi
if [ "$what" = families ]; then
    (cd benchmarks && python3 bench_families.py --out "$out/bench_families.json" "$@") 2>&1 | tee "$out/bench_families.txt" || status=1
fi
exit $status
