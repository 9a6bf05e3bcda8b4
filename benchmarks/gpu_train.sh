#!/usr/bin/env bash
# One GPU session for the batched trainer, sized to about 8 minutes on one H100/H200:
#   1. throughput with learning included: ours (the gpu preset: shared encoder, bf16) beside the
#      central-critic fp32 recipe and TorchRL MAPPO on VMAS (bench_train.py), then ours in fp32;
#   2. three seeds of SA from scratch with --preset gpu (no teacher, no touch features), each for
#      TRAIN_SECONDS of training at the measured rate; the runs come back as runs.tgz, for
#      `hyperagents ood` on any machine;
#   3. with ATTENTION=1, the attention library's and the world's GPU tables (bench_attention.py,
#      bench_env.py).
# Run from the repository root; results go to $OUT (default out/): one log, JSON files, runs.tgz.
# Missing Python packages can be carried as wheels in .whl/ (installed to /tmp/site first).
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-60}
SEC=${SEC:-8}
WORLDS=${WORLDS:-4096}
BATCH=${BATCH:-16384}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the whole script at tiny sizes
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy
nvidia-smi -L || true
python3 -c "import torch, torchrl, tensordict; print('torch', torch.__version__, 'torchrl', torchrl.__version__, 'tensordict', tensordict.__version__)" \
  || { echo "torchrl does not import here"; exit 1; }

echo "== 1. throughput $(date +%T)"
timeout 150 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
  --seconds "$SEC" --central --out "$OUT/train_gpu.json" 2>&1 | grep -v Warning
timeout 60 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
  --seconds "$SEC" --only ours_torchrl --precision fp32 --out "$OUT/train_gpu_fp32.json" 2>&1 | grep -v Warning
RATE=$(python3 -c "import json; print(int(json.load(open('$OUT/train_gpu.json'))['best']['ours_torchrl']['agent_steps_per_s']))" \
  2>/dev/null || echo 300000)
STEPS=$((RATE * TRAIN_SECONDS / 1000 * 1000))
[ "$STEPS" -ge 100000 ] || STEPS=100000
echo "rate $RATE agent-steps/s -> $STEPS agent-steps per seed"

echo "== 2. from scratch, seeds $SEEDS $(date +%T)"
for s in $SEEDS; do
  timeout $((TRAIN_SECONDS * 2 + 30)) python3 -m training.cli train --preset gpu --device "$DEVICE" --seed "$s" \
    --num-worlds "$WORLDS" --batch-size "$BATCH" --total-timesteps "$STEPS" --checkpoint-every 1000000000 \
    --runs-dir "$OUT/runs" --run-name "gpu_sa_$s" --no-progress 2>&1 | tail -2
done
tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs"

if [ -n "${ATTENTION:-}" ]; then
  echo "== 3. attention library and world on $DEVICE $(date +%T)"
  timeout 120 python3 benchmarks/bench_attention.py --device "$DEVICE" --out "$OUT/attention_$DEVICE.json" 2>&1 | tail -30
  timeout 100 python3 benchmarks/bench_env.py --device "$DEVICE" --passes 1 --repeats 2 --seconds 0.3 \
    --out "$OUT/env_$DEVICE.json" 2>&1 | tail -30
fi
echo "== done $(date +%T)"
