#!/usr/bin/env bash
# One GPU session for the batched trainer and the attention kernels, the steps that matter most first
# (each under its own timeout, so a slow one cannot eat the rest; about 10 minutes in all, one 10-minute
# device call; SKIP="N ..." leaves steps out, and step 4 runs only with SKIP= set empty, 3 minutes more):
#   1. the CUDA tests: the attention kernels (the fused Triton HFA among them) and the trainer's
#      CUDA-graph update against the eager one;
#   2. the attention library's long-context tables: HFA beside SA and torch SDPA as modules, and the
#      bare kernels (fused Triton HFA, its torch blockwise kernel, SDPA) in fp32, tf32x3, tf32, bf16;
#   3. throughput with learning included (bench_train.py): ours (the gpu preset: shared encoder,
#      bf16), the same with --cuda-graphs (CENTRAL=1: the central-critic fp32 recipe too) and
#      TorchRL MAPPO on VMAS, at WORLDS worlds, and ours with 4x larger minibatches;
#   4. three seeds of the CPU recipe (the scratch-cpu preset: 64 worlds, minibatches of 1,024) from
#      scratch on the GPU with --cuda-graphs, trained at once for up to TRAIN_SECONDS (180) each; the runs
#      come back as runs.tgz for `hyperagents ood` on any machine;
#   5. throughput again at BIG_WORLDS worlds, ours with and without CUDA graphs beside VMAS MAPPO of
#      our size;
#   6. the world alone on the GPU beside VMAS and the dense/grid crossover (bench_env.py --device cuda),
#      last since a run past the call's limit still returns what $OUT holds.
# Run from the repository root; results go to $OUT (default out/): one log, JSON files, runs.tgz.
# Missing Python packages can be carried as wheels in .whl/ (installed to /tmp/site first).
set -u
OUT=${OUT:-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-180}
SEC=${SEC:-6}
WORLDS=${WORLDS:-4096}
BIG_WORLDS=${BIG_WORLDS:-16384}
BATCH=${BATCH:-16384}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the whole script at tiny sizes
SEEDS=${SEEDS:-0 1 2}
SKIP=${SKIP-4}  # step numbers to leave out, e.g. SKIP="2 4"; SKIP= runs step 4 too (3 more minutes)
want() { [[ " $SKIP " != *" $1 "* ]] || { echo skipped; false; }; }
GRAPHS=$([ "${DEVICE%%:*}" = cuda ] && echo --cuda-graphs)  # CUDA only: the CPU dry run trains eagerly
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
want 1 && {
# the trainer's graph tests first, then the kernels' (Triton's autotuning makes those take minutes)
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/marl/test_torchrl_backend.py tests/policies/test_hfa_triton.py \
  tests/policies/test_attention_cuda.py -k "cuda or triton or fused" 2>&1 | tail -15
}

echo "== 2. attention at long context on $DEVICE $(date +%T)"
want 2 && {
cp benchmarks/results/attention.json "$OUT/attention.json"
timeout 150 python3 benchmarks/bench_attention.py --device "$DEVICE" --suite gpu --tables long hfa_kernels ${QUICK:+--quick} \
  --out "$OUT/attention.json" --readme /tmp/README_attention.md 2>&1 | tail -14
}

echo "== 3. throughput at $WORLDS worlds $(date +%T)"
want 3 && {
timeout 150 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
  --seconds "$SEC" ${CENTRAL:+--central} --out "$OUT/train_gpu.json" 2>&1 | grep -v Warning | tail -12
python3 -c "import json; [print(k, v.get('phase_seconds')) for k, v in json.load(open('$OUT/train_gpu.json'))['best'].items()]" || true
timeout 80 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size $((BATCH * 4)) \
  --seconds "$SEC" --only ours_torchrl ours_torchrl_graphs --out "$OUT/train_gpu_mb4.json" 2>&1 | grep -v Warning | tail -3
}

echo "== 4. the CPU recipe from scratch with CUDA graphs, seeds $SEEDS at once $(date +%T)"
if want 4; then
  trainers=()
  for s in $SEEDS; do
    timeout "$TRAIN_SECONDS" python3 -m training.cli train --preset scratch-cpu --device "$DEVICE" $GRAPHS \
      --seed "$s" ${STEPS:+--total-timesteps "$STEPS"} --checkpoint-every 250000 \
      --runs-dir "$OUT/runs" --run-name "gpu_scratch_sa_$s" --no-progress >"$OUT/train_$s.log" 2>&1 &
    trainers+=($!)
  done
  wait "${trainers[@]}"  # the trainers only: the nvidia-smi logger runs to the end
  for s in $SEEDS; do tail -2 "$OUT/train_$s.log"; python3 -c "import json; m = json.load(open('$OUT/runs/gpu_scratch_sa_$s/metrics.json')); \
  print('seed $s', m['num_timesteps'], 'agent-steps in', round(m['train_seconds']), 's')" || true; done
  tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs" "$OUT"/train_?.log
fi

echo "== 5. throughput at $BIG_WORLDS worlds $(date +%T)"
want 5 && {
timeout 120 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$BIG_WORLDS" --batch-size $((BATCH * 4)) \
  --seconds "$SEC" --only ours_torchrl ours_torchrl_graphs vmas_torchrl_mappo_equal --out "$OUT/train_gpu_big.json" \
  2>&1 | grep -v Warning | tail -6
python3 -c "import json; [print(k, v.get('phase_seconds')) for k, v in json.load(open('$OUT/train_gpu_big.json'))['best'].items()]" || true
}

echo "== 6. the world on $DEVICE $(date +%T)"
want 6 && timeout 120 python3 benchmarks/bench_env.py --device "$DEVICE" ${QUICK:+--quick} --out "$OUT/env_cuda.json" 2>&1 | tail -12
echo "== done $(date +%T)"
