#!/usr/bin/env bash
# Every check and benchmark that needs a GPU, as one prepared run for a short GPU lease
# (nothing here is part of the test suite; CI has no GPU). Run from the repository root:
#
#   bash benchmarks/gpu_checks.sh DATA_DIR OUT_DIR [PART ...]
#
#   DATA_DIR  folder with the four MNIST *-ubyte.gz files
#   OUT_DIR   where the logs and JSON lines go (created)
#   PART      any of: tests cuda-suite speed hvae-speed hvae-train score=RUN
#             (default: tests cuda-suite speed hvae-speed)
#             tests       the GPU-marked tests
#             cuda-suite  the suite's CUDA-relevant files on a machine where device "auto" means
#                         CUDA
#             speed       benchmarks/device_speed.py --device cuda: examples/s in memory, --amp,
#                         --compile, streamed .npy; the MLP and the conv model, batch 128 and 1024
#             hvae-speed  benchmarks/mnist_hvae.py --speed: the --preset mnist model's step and epoch,
#                         float32 and --amp
#             hvae-train  the --preset mnist model trained (float32 or --amp, the faster) for as many epochs as fit in
#                         what is left of BUDGET_S (from hvae-speed's epoch time; at most the preset's
#                         100, KL warm-up scaled with them), scored at k = 1000 on the first 1,000 test
#                         images; run folder in OUT_DIR/hvae-run
#             score=RUN   benchmarks/mnist_hvae.py --scored-run RUN: test NLL, k = 5000, all 10,000
#                         test images (RUN: a finished run or a `vaekit snapshot` of one in progress)
#
# BUDGET_S (default 540): seconds the whole script may take, counted from its start (hvae-train
# fits its epochs into what is left). DEVICE=cpu runs the same parts on the CPU (a dry run of the
# script itself; use tiny budgets).
#
# It uses the machine's own python3 and torch (no install; PYTHONPATH=src), so any CUDA build
# of torch >= 2.2 does. Each part has its own time limit and a failing part does not stop the
# others; the exit code is the number of parts that failed.
set -u
DATA=${1:?usage: gpu_checks.sh DATA_DIR OUT_DIR [PART ...]}
OUT=${2:?usage: gpu_checks.sh DATA_DIR OUT_DIR [PART ...]}
shift 2
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(tests cuda-suite speed hvae-speed)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET_S:-540}
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

[ "$DEVICE" = cpu ] || $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || { echo "gpu_checks: $PY sees no CUDA device; run this on a GPU machine"; exit 100; }
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())" \
    | tee "$OUT/machine.txt"
for p in "${PARTS[@]}"; do
    case $p in
        tests)
            part gpu_tests 150 $PY -m pytest -q -p no:cacheprovider -m gpu tests ;;
        cuda-suite)
            # the files whose models run on "auto" (CUDA here); the table files need sdmetrics
            part suite_on_cuda "${SUITE_LIMIT_S:-300}" $PY -m pytest -q -p no:cacheprovider -v --tb=short tests/test_devices.py tests/test_hvae.py \
                tests/test_math.py tests/test_variants.py tests/test_conditional.py tests/test_stream.py ;;
        speed)
            part device_speed "${SPEED_LIMIT_S:-240}" $PY benchmarks/device_speed.py --device "$DEVICE" --data-dir "$DATA" --n "${SPEED_N:-20000}" \
                --no-compile --models mlp-784-256-256-16,conv-32-64-16,iwae50-784-200-200-50 ;;
        hvae-speed)
            for amp in "" --amp; do
                part "hvae_speed${amp:+_amp}" 120 $PY benchmarks/mnist_hvae.py --speed "${HVAE_SPEED_N:-12800}" \
                    --device "$DEVICE" --data-dir "$DATA" $amp
            done ;;
        hvae-train)
            # the epochs that fit: what is left of the budget less scoring and start-up, over the
            # measured epoch time of the faster way (float32 or --amp) with a margin for validation
            # and the first epoch's tuning
            read -r epochs warmup amp < <($PY - "$OUT" $((BUDGET - SECONDS)) <<'EOF'
import json, sys
def row(name):
    try:
        return [json.loads(t) for t in open(f"{sys.argv[1]}/{name}.log") if t.startswith("{")][-1]
    except (OSError, IndexError):
        return None
rows = [r for r in (row("hvae_speed"), row("hvae_speed_amp")) if r]  # train the faster way
r = min(rows, key=lambda r: r["seconds_per_step"])
epochs = max(1, min(100, int((float(sys.argv[2]) - 75) / (r["seconds_per_mnist_epoch"] * 1.2 + 2))))
print(epochs, max(1.0, round(epochs / 10, 1)), "--amp" if r["amp"] else "")
EOF
)
            [ -n "${epochs:-}" ] || { echo "hvae-train: no epoch time from hvae-speed (run that part first)"; failed=$((failed + 1)); continue; }
            part hvae_train $((BUDGET - SECONDS)) $PY benchmarks/mnist_hvae.py --device "$DEVICE" --data-dir "$DATA" \
                $amp --epochs "$epochs" --kl-warmup "$warmup" --eval-k "${HVAE_EVAL_K:-1000}" \
                --eval-n "${HVAE_EVAL_N:-1000}" ${HVAE_TRAIN_N:+--train-n $HVAE_TRAIN_N} --out "$OUT/hvae-run" --results "$OUT/mnist_hvae.jsonl" ;;
        score=*)
            part hvae_score 480 $PY benchmarks/mnist_hvae.py --scored-run "${p#score=}" --device cuda \
                --data-dir "$DATA" --eval-k 5000 --results "$OUT/mnist_hvae.jsonl" ;;
        *)
            echo "unknown part $p (tests, cuda-suite, speed, hvae-speed, hvae-train, score=RUN)"; failed=$((failed + 1)) ;;
    esac
done
echo "parts failed: $failed"
exit $failed
