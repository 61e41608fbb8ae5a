#!/usr/bin/env bash
# One call on the GPU machine: install the kernel wheels and this project, then run what the modes name, in order.
#   usage: bash benchmarks/gpu_check.sh MODE[,MODE...] [benchmark args...]   (default: all = tests,bench)
#   several benchmarks with their own args in one device call: one gpu_check.sh per mode, joined with ';' (the
#   wheels are installed once per machine)
#   tests: the whole suite with the kernels, then the GPU tests without causal-conv1d (and the Mamba-1 kernel)
#   bench: bench_real_mamba.py and bench_document_state.py
#   families: the deployed-family shapes (FalconMamba, Codestral, Granite-4.0-H) vs transformers (bench_families.py)
#   profile: where those shapes' decode step spends its GPU time (profile_families.py)
#   serving: the real server under concurrent streaming clients (bench_serving.py)
#   engine: the batching engine's GPU tests, then the engine alone (bench_engine.py)
#   fused: the fused decode step's tests (and the real-mamba and family suites it runs under)
#   decode: bench_real_mamba.py alone (fused and unfused step, mamba-ssm, HF, Llama)
#   rows: the fused kernels' tl.dot tiles for a batch of 16 rows (the transposed ones, swap_ab, included) against
#         the unfused chain and F.linear (bench_fused_kernels.py)
# Benchmark args go to every benchmark a mode runs, so give them with one benchmark mode (or none for defaults).
# Expects .wheels/ (mamba-ssm, causal-conv1d) and .whl/ (pydantic, the server's packages and this project's wheels,
# for their entry points) carried along; the working tree's code comes first on the path, so a changed file needs no
# new wheel.
set -uo pipefail
cd "$(dirname "$0")/.."
modes="${1:-all}"; shift || true
[ "$modes" = all ] && modes=tests,bench
out="${OUT:-/tmp/mamba-router-out}"; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
installed=/tmp/mamba-router-wheels-installed
if ! cmp -s "$installed" <(ls -l .wheels .whl); then
    python3 -m pip install -q --no-index --no-deps --no-compile .wheels/*.whl .whl/*.whl || exit 1
    ls -l .wheels .whl >"$installed"
fi
export PYTHONPATH="$PWD:$PWD/mamba_router_cuda:$PWD/mamba_router_mps${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
bench() {  # bench NAME SCRIPT [args...]: one benchmark from benchmarks/, its table and JSON under $out
    local name="$1" script="$2"; shift 2
    (cd benchmarks && python3 "$script" --out "$out/$name.json" "$@") 2>&1 | tee "$out/$name.txt" || status=1
}
for mode in ${modes//,/ }; do
    echo "== $mode"
    case "$mode" in
    tests)
        mamba-router info | tee "$out/info.txt"
        python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt" | tail -25 || status=1
        MAMBA_ROUTER_TEST_HIDE_MODULES=causal_conv1d,causal_conv1d_cuda,selective_scan_cuda \
            python3 -m pytest -q -x -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/tests_no_causal_conv1d.txt" | tail -15 || status=1
        ;;
    bench)
        bench bench_real_mamba bench_real_mamba.py "$@"
        bench bench_document_state bench_document_state.py
        ;;
    serving) bench bench_serving bench_serving.py "$@" ;;
    engine)
        python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_engine_gpu.py 2>&1 | tee "$out/tests_engine.txt" | tail -15 || status=1
        bench bench_engine bench_engine.py "$@"
        ;;
    fused)
        timeout 520 python3 -m pytest -q -p no:cacheprovider tests/test_fused_step.py tests/test_fused_step_gpu.py \
            tests/test_real_mamba_gpu.py tests/test_families_gpu.py 2>&1 | tee "$out/tests_fused.txt" | tail -25 || status=1
        ;;
    decode) bench bench_real_mamba bench_real_mamba.py "$@" ;;
    rows)
        bench bench_fused_kernels_rows bench_fused_kernels.py --shapes "130m in_proj" "130m out_proj" "1.4b in_proj" \
            "1.4b out_proj" --batches 16
        ;;
    families) bench bench_families bench_families.py "$@" ;;
    profile)
        (cd benchmarks && python3 profile_families.py "$@") 2>&1 | tee "$out/profile_families.txt" || status=1
        ;;
    *) echo "unknown mode: $mode" >&2; status=1 ;;
    esac
done
exit $status
