#!/usr/bin/env bash
# One GPU session for the batched trainer and the attention kernels: 374 s on one H100 (2026-11-26,
# TRAIN_SECONDS=35), the steps that matter most first (each has its own timeout, so a slow one cannot eat
# the rest):
#   1. the CUDA tests of the attention kernels (the fused Triton HFA among them);
#   2. the attention library's long-context tables: HFA beside SA and torch SDPA as modules, and the
#      bare kernels (fused Triton HFA, its torch blockwise kernel, SDPA) in fp32, tf32 and bf16;
#   3. throughput with learning included (bench_train.py): ours (the gpu preset: shared encoder,
#      bf16) beside the central-critic fp32 recipe and TorchRL MAPPO on VMAS, at WORLDS worlds;
#   4. three seeds of the gpu preset from scratch (no teacher, no touch features), trained at once
#      on the one GPU, each for about TRAIN_SECONDS of its solo rate's agent-steps; the runs come
#      back as runs.tgz for `hyperagents ood` on any machine;
#   5. throughput again at BIG_WORLDS worlds, ours beside VMAS MAPPO of our size (3 and 5 also time
#      ours with 4x larger minibatches).
# Run from the repository root; results go to $OUT (default out/): one log, JSON files, runs.tgz.
# Missing Python packages can be carried as wheels in .whl/ (installed to /tmp/site first).
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-45}
SEC=${SEC:-8}
WORLDS=${WORLDS:-4096}
BIG_WORLDS=${BIG_WORLDS:-16384}
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
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 1000 >"$OUT/util.csv" 2>/dev/null &
python3 -c "import torch, torchrl, tensordict; print('torch', torch.__version__, 'torchrl', torchrl.__version__, 'tensordict', tensordict.__version__)" \
  || { echo "torchrl does not import here"; exit 1; }
python3 -c "import triton; print('triton', triton.__version__)" || true

echo "== 1. CUDA tests $(date +%T)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/policies/test_attention_cuda.py tests/policies/test_hfa_triton.py 2>&1 | tail -15

echo "== 2. attention at long context on $DEVICE $(date +%T)"
cp benchmarks/results/attention.json "$OUT/attention.json"
timeout 150 python3 benchmarks/bench_attention.py --device "$DEVICE" --suite gpu --tables long hfa_kernels ${QUICK:+--quick} \
  --out "$OUT/attention.json" --readme /tmp/README_attention.md 2>&1 | tail -12

echo "== 3. throughput at $WORLDS worlds $(date +%T)"
timeout 170 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
  --seconds "$SEC" --central --out "$OUT/train_gpu.json" 2>&1 | grep -v Warning | tail -12
python3 -c "import json; [print(k, v.get('phase_seconds')) for k, v in json.load(open('$OUT/train_gpu.json'))['best'].items()]" || true
RATE=$(python3 -c "import json; print(int(json.load(open('$OUT/train_gpu.json'))['best']['ours_torchrl']['agent_steps_per_s']))" \
  2>/dev/null || echo 300000)
STEPS=$((RATE * TRAIN_SECONDS / 1000 * 1000))
[ "$STEPS" -ge 100000 ] || STEPS=100000
echo "rate $RATE agent-steps/s -> $STEPS agent-steps per seed"
timeout 60 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size $((BATCH * 4)) \
  --seconds "$SEC" --only ours_torchrl --out "$OUT/train_gpu_mb4.json" 2>&1 | grep -v Warning | tail -2

echo "== 4. from scratch, seeds $SEEDS at once $(date +%T)"
trainers=()
for s in $SEEDS; do
  timeout $((TRAIN_SECONDS * 3 + 40)) python3 -m training.cli train --preset gpu --device "$DEVICE" --seed "$s" \
    --num-worlds "$WORLDS" --total-timesteps "$STEPS" --checkpoint-every $((STEPS / 8 + 1)) \
    --runs-dir "$OUT/runs" --run-name "gpu_sa_$s" --no-progress >"$OUT/train_$s.log" 2>&1 &
  trainers+=($!)
done
wait "${trainers[@]}"  # the trainers only: the nvidia-smi logger runs to the end
for s in $SEEDS; do tail -2 "$OUT/train_$s.log"; done
tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs" "$OUT"/train_?.log

echo "== 5. throughput at $BIG_WORLDS worlds $(date +%T)"
timeout 150 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$BIG_WORLDS" --batch-size $((BATCH * 4)) \
  --seconds "$SEC" --only ours_torchrl vmas_torchrl_mappo_equal --out "$OUT/train_gpu_big.json" 2>&1 | grep -v Warning | tail -6
python3 -c "import json; print(json.load(open('$OUT/train_gpu_big.json'))['best']['ours_torchrl'].get('phase_seconds'))" || true
echo "== done $(date +%T)"
