#!/usr/bin/env bash
# One GPU session for the batched trainer and the attention kernels, the steps that matter most first
# (each under its own timeout, so a slow one cannot eat the rest; about 10 minutes in all, one 10-minute
# device call; SKIP="N ..." leaves steps out, and step 4 runs only with SKIP= set empty, 3 minutes more):
#   1. the trainer's CUDA tests: the CUDA-graph update (compiled or not) against the eager one;
#   2. the attention kernels' CUDA tests (the fused Triton HFA among them; minutes of autotuning), then
#      the library's long-context tables: HFA beside SA and torch SDPA as modules, and the bare
#      kernels (fused Triton HFA, its torch blockwise kernel, SDPA) in fp32, tf32x3, tf32, bf16;
#   3. throughput with learning included (bench_train.py): ours (the gpu preset: shared encoder,
#      bf16), the same with --cuda-graphs (CENTRAL=1: the central-critic fp32 recipe too) and
#      TorchRL MAPPO on VMAS, at WORLDS worlds (MB4=1: ours with 4x larger minibatches too);
#   4. three seeds of the CPU recipe (the scratch-cpu preset: 64 worlds, minibatches of 1,024) from
#      scratch on the GPU with --cuda-graphs (COMPILE=1: and --compile), trained at once for up to
#      TRAIN_SECONDS (180) each; the runs come back as runs.tgz for `hyperagents ood` on any machine;
#   5. throughput again at BIG_WORLDS worlds, ours with and without CUDA graphs beside VMAS MAPPO of
#      our size;
#   6. the world alone on the GPU beside VMAS and the dense/grid crossover (bench_env.py --device cuda);
#   7. where the update's time goes: the device kernels of full minibatch steps at BIG_WORLDS worlds
#      and BATCH samples, eager and compiled (profile_update.py; compiling failed at 4x BATCH).
# COMPILE=1 adds the --compile rows (torch.compile, with and without graphs) to steps 3 and 5. ORDER
# sets the order of the steps: a run past the call's limit still returns what $OUT holds, so the
# steps that matter most go first.
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
ORDER=${ORDER:-1 2 3 4 5 6 7}
COMPILED=${COMPILE:+--compile}
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


step1() {
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/marl/test_torchrl_backend.py -k cuda 2>&1 | tail -8
}

step2() {
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/policies/test_hfa_triton.py \
    tests/policies/test_attention_cuda.py -k "cuda or triton or fused" 2>&1 | tail -10
  cp benchmarks/results/attention.json "$OUT/attention.json"
  timeout 150 python3 benchmarks/bench_attention.py --device "$DEVICE" --suite gpu --tables long hfa_kernels ${QUICK:+--quick} \
    --out "$OUT/attention.json" --readme /tmp/README_attention.md 2>&1 | tail -14
}

phases() {  # each configuration's mean seconds per iteration in each phase, from a bench_train JSON
  python3 -c "import json; [print(k, v.get('phase_seconds'), 'warm-up', v.get('warmup_seconds')) \
    for k, v in json.load(open('$1'))['best'].items()]" || true
}

step3() {
  timeout 240 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size "$BATCH" \
    --seconds "$SEC" ${CENTRAL:+--central} $COMPILED --out "$OUT/train_gpu.json" 2>&1 | grep -v Warning | tail -12
  phases "$OUT/train_gpu.json"
  [ -n "${MB4:-}" ] && timeout 80 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$WORLDS" --batch-size $((BATCH * 4)) \
    --seconds "$SEC" --only ours_torchrl ours_torchrl_graphs --out "$OUT/train_gpu_mb4.json" 2>&1 | grep -v Warning | tail -3
}

step4() {  # the CPU recipe from scratch with CUDA graphs, the seeds at once
  local trainers=() s
  for s in $SEEDS; do
    # SIGINT: the trainer saves its checkpoint and stops, as on ctrl-C
    timeout -s INT "$TRAIN_SECONDS" python3 -m training.cli train --preset scratch-cpu --device "$DEVICE" $GRAPHS $COMPILED \
      --seed "$s" ${STEPS:+--total-timesteps "$STEPS"} --checkpoint-every 250000 \
      --runs-dir "$OUT/runs" --run-name "gpu_scratch_sa_$s" --no-progress >"$OUT/train_$s.log" 2>&1 &
    trainers+=($!)
  done
  wait "${trainers[@]}"  # the trainers only: the nvidia-smi logger runs to the end
  for s in $SEEDS; do tail -2 "$OUT/train_$s.log"; python3 -c "import json; m = json.load(open('$OUT/runs/gpu_scratch_sa_$s/metrics.json')); \
  print('seed $s', m['num_timesteps'], 'agent-steps in', round(m['train_seconds']), 's')" || true; done
  tar czf "$OUT/runs.tgz" -C "$OUT" runs && rm -rf "$OUT/runs" "$OUT"/train_?.log
}

step5() {
  local only=(ours_torchrl ours_torchrl_graphs vmas_torchrl_mappo_equal)
  [ -n "$COMPILED" ] && only=(ours_torchrl_graphs ours_torchrl_graphs_compile vmas_torchrl_mappo_equal)
  timeout 180 python3 benchmarks/bench_train.py --device "$DEVICE" --num-worlds "$BIG_WORLDS" --batch-size $((BATCH * 4)) \
    --seconds "$SEC" $COMPILED --only "${only[@]}" --out "$OUT/train_gpu_big.json" 2>&1 | grep -v Warning | tail -6
  phases "$OUT/train_gpu_big.json"
}

step6() {
  timeout 120 python3 benchmarks/bench_env.py --device "$DEVICE" ${QUICK:+--quick} --out "$OUT/env_cuda.json" 2>&1 | tail -12
}

step7() {
  local c
  for c in "" --compile; do
    timeout 90 python3 benchmarks/profile_update.py --device "$DEVICE" --num-worlds "$BIG_WORLDS" \
      --batch-size "$BATCH" $c --top 20 --out "$OUT/profile${c:+_compiled}.json" 2>&1 | grep -v "Warning\|USDT"
  done
}

NAMES=([1]="the trainer's CUDA tests" [2]="the attention kernels: CUDA tests, long-context tables" [3]="throughput at $WORLDS worlds" [4]="the CPU recipe from scratch, seeds $SEEDS"
  [5]="throughput at $BIG_WORLDS worlds" [6]="the world alone" [7]="the update's kernels")
for n in $ORDER; do
  echo "== $n. ${NAMES[$n]} on $DEVICE $(date +%T)"
  if [[ " $SKIP " == *" $n "* ]]; then echo skipped; else "step$n"; fi
done
echo "== done $(date +%T)"
