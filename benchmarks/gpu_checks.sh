#!/usr/bin/env bash
# Every check and benchmark that needs a GPU, as one prepared run for a short GPU lease
# (nothing here is part of the test suite; CI has no GPU). Run from the repository root:
#
#   bash benchmarks/gpu_checks.sh DATA_DIR OUT_DIR [PART ...]
#
#   DATA_DIR  folder with the four MNIST *-ubyte.gz files
#   OUT_DIR   where the logs and JSON lines go (created)
#   PART      any of: tests speed hvae-speed score=RUN (default: tests speed hvae-speed)
#             tests       the GPU-marked tests, then the suite's CUDA-relevant files on a
#                         machine where device "auto" means CUDA (about 3 minutes on one H100)
#             speed       benchmarks/device_speed.py --device cuda: examples/s in memory, --amp,
#                         --compile, streamed .npy; the MLP and the conv model, batch 128 and 1024
#             hvae-speed  benchmarks/mnist_hvae.py --speed: the --preset mnist model's step and epoch
#             score=RUN   benchmarks/mnist_hvae.py --scored-run RUN: test NLL, k = 5000, all 10,000
#                         test images (RUN: a finished run or a `vaekit snapshot` of one in progress)
#
# It uses the machine's own python3 and torch (no install; PYTHONPATH=src), so any CUDA build
# of torch >= 2.2 does. Each part has its own time limit and a failing part does not stop the
# others; the exit code is the number of parts that failed.
set -u
DATA=${1:?usage: gpu_checks.sh DATA_DIR OUT_DIR [PART ...]}
OUT=${2:?usage: gpu_checks.sh DATA_DIR OUT_DIR [PART ...]}
shift 2
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(tests speed hvae-speed)
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
failed=0

part() {  # part NAME SECONDS command...: run with a time limit, log to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$OUT/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -ne 0 ] && failed=$((failed + 1))
    return 0
}

$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || { echo "gpu_checks: $PY sees no CUDA device; run this on a GPU machine"; exit 100; }
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
    | tee "$OUT/machine.txt"
for p in "${PARTS[@]}"; do
    case $p in
        tests)
            part gpu_tests 200 $PY -m pytest -q -p no:cacheprovider -m gpu tests
            # the files whose models run on "auto" (CUDA here); the table files need sdmetrics
            part suite_on_cuda 300 $PY -m pytest -q -p no:cacheprovider -x tests/test_train.py tests/test_math.py \
                tests/test_variants.py tests/test_hvae.py tests/test_conditional.py tests/test_devices.py \
                tests/test_stream.py ;;
        speed)
            part device_speed 240 $PY benchmarks/device_speed.py --device cuda --data-dir "$DATA" --models mlp-784-256-256-16,conv-32-64-16 ;;
        hvae-speed)
            part hvae_speed 120 $PY benchmarks/mnist_hvae.py --speed 12800 --device cuda --data-dir "$DATA" \
                --results "$OUT/mnist_hvae.jsonl" ;;
        score=*)
            part hvae_score 480 $PY benchmarks/mnist_hvae.py --scored-run "${p#score=}" --device cuda \
                --data-dir "$DATA" --eval-k 5000 --results "$OUT/mnist_hvae.jsonl" ;;
        *)
            echo "unknown part $p (tests, speed, hvae-speed, score=RUN)"; failed=$((failed + 1)) ;;
    esac
done
echo "parts failed: $failed"
exit $failed
