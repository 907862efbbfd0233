#!/usr/bin/env bash
# The process comparison of issue 3: every family on PTB train -> PTB valid with the same tokenizer
# settings, network, steps, batch, learning rate and seed; only the recipe's process section differs.
# Usage: bash evaluation/results/process_comparison.sh [OUT_ROOT] [FAMILY...]
# Results: evaluation/results/process_comparison.{md,json} (collected by process_comparison.py).
set -euo pipefail
OUT=${1:-/tmp/process_comparison}
shift || true
PTB=${PTB:-../shared/data/ptb}
COMMON=(
  data.source=$PTB/ptb.train.txt data.val_source=$PTB/ptb.valid.txt data.lines_are_documents=true
  tokenizer.vocab_size=2048
  model.hidden_size=128 model.num_layers=2 model.num_heads=4
  train.max_steps=150 train.max_minutes=null train.batch_size=32 train.lr=2e-3 train.warmup_steps=20 train.lr_schedule=cosine train.mixed_precision=auto train.compile=false
  train.eval_every=150 train.eval_batches=0 train.eval_t_samples=2 train.save_every=1000 train.log_every=10
  train.num_threads=1 train.trackers=[] train.seed=0
)
declare -A RECIPE=(
  [masked]="recipes/quickstart.yaml process.time_conditioning=false"
  [sedd_absorb]="recipes/sedd-absorb-quickstart.yaml process.time_conditioning=false"
  [udlm]="recipes/udlm-quickstart.yaml process.time_conditioning=false"
  [sedd_uniform]="recipes/sedd-uniform-quickstart.yaml process.time_conditioning=false"
  [ar]="recipes/ar-quickstart.yaml"
  [udlm_t]="recipes/udlm-quickstart.yaml process.time_conditioning=true"
  [sedd_uniform_t]="recipes/sedd-uniform-quickstart.yaml process.time_conditioning=true"
  [masked_t]="recipes/quickstart.yaml process.time_conditioning=true"
)
FAMILIES=("$@")
[ ${#FAMILIES[@]} -eq 0 ] && FAMILIES=(ar masked sedd_absorb udlm sedd_uniform udlm_t masked_t)
for fam in "${FAMILIES[@]}"; do
  # shellcheck disable=SC2086
  set -- ${RECIPE[$fam]}
  cmd=(textdiff train "$@" name=cmp-$fam output_dir=$OUT/$fam "${COMMON[@]}")
  echo "OMP_NUM_THREADS=1 taskset -c 1 ${cmd[*]}" | tee "$OUT.$fam.cmd"
  start=$(date +%s)
  OMP_NUM_THREADS=1 taskset -c 1 "${cmd[@]}" > "$OUT.$fam.log" 2>&1
  echo "$fam done in $(( $(date +%s) - start )) s"
done
