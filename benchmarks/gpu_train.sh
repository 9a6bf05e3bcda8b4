#!/usr/bin/env bash
# One GPU session for the batched trainer, sized to about 9 minutes on one H100/H200:
#   1. throughput with learning included, ours beside TorchRL MAPPO on VMAS (bench_train.py);
#   2. three seeds of SA from scratch (no teacher, no touch features), each for TRAIN_SECONDS
#      of training at the measured rate;
#   3. their evaluation at L = 2..64 (argmax and sampled), pooled over seeds, on the CPU;
#   4. with ATTENTION=1, the attention library's GPU suite (bench_attention.py, under 90 s).
# Run from the repository root; results go to $OUT (default out/): logs, JSON, runs.tgz.
# Missing Python packages can be carried as wheels in .whl/ (installed to /tmp/site first).
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-100}
SEC=${SEC:-15}
WORLDS=${WORLDS:-4096}
BATCH=${BATCH:-16384}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the whole script at tiny sizes
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy
nvidia-smi -L || true
python3 -c "import torch, torchrl, tensordict; print('torch', torch.__version__, 'torchrl', torchrl.__version__, 'tensordict', tensordict.__version__)" \
  || { echo "torchrl does not import here"; exit 1; }

echo "== 1. throughput"
timeout 200 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
  --seconds "$SEC" --out "$OUT/train_gpu.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log"
RATE=$(python3 -c "import json; print(int(json.load(open('$OUT/train_gpu.json'))['best']['ours_torchrl']['agent_steps_per_s']))" \
  2>/dev/null || echo 300000)
STEPS=$((RATE * TRAIN_SECONDS / 1000 * 1000))
echo "rate $RATE agent-steps/s -> $STEPS agent-steps per seed"

echo "== 2. from scratch, 3 seeds"
RUNS=()
for s in 0 1 2; do
  timeout $((TRAIN_SECONDS * 2 + 30)) python3 -m training.cli train --backend torchrl --device "$DEVICE" --seed "$s" \
    --num-worlds "$WORLDS" --num-agents 2 16 --neighbours 7 --n-steps 32 --batch-size "$BATCH" \
    --learning-rate 1e-3 --learning-rate-final 1e-4 --ent-coef-final 0 --total-timesteps "$STEPS" \
    --checkpoint-every 20000000 --runs-dir "$OUT/runs" --run-name "scratch_sa_$s" --no-progress 2>&1 | tail -3
  RUNS+=("$OUT/runs/scratch_sa_$s")
done

echo "== 3. evaluation at unseen agent counts"
for m in ${MODES:-det sto}; do
  D=$([ $m = det ] && echo --deterministic)
  timeout 120 python3 -m training.cli ood --run "${RUNS[@]}" $D --counts 2 4 --episodes 400 --reps 2000 \
    --threads 8 --out-dir "$OUT/runs/ood_small_$m" 2>&1 | tail -4
  timeout 120 python3 -m training.cli ood --run "${RUNS[@]}" $D --counts 8 16 32 64 --episodes 100 --reps 2000 \
    --threads 8 --out-dir "$OUT/runs/ood_large_$m" 2>&1 | tail -6
done
tar czf "$OUT/runs.tgz" -C "$OUT" runs

if [ -n "${ATTENTION:-}" ]; then
  echo "== 4. attention library on $DEVICE"
  timeout 150 python3 benchmarks/bench_attention.py --device "$DEVICE" --out "$OUT/attention_$DEVICE.json" 2>&1 | tail -40
fi
echo "== done"
