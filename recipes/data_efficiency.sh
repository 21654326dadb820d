#!/usr/bin/env bash
# WER against transcribed hours, with and without alignment — the question the paper raises and leaves
# open. One aligned encoder per language (and seed) is trained once; then, for each amount of
# transcribed data, a direct run and a run fine-tuned from the aligned encoder, with the same budget.
#
#   bash recipes/data_efficiency.sh
#   HOURS="1 2 5" SOURCE=builtin INIT=tiny bash recipes/data_efficiency.sh
# `avasr compare` then prints both curves and plots WER against train hours.
set -euo pipefail

read -r -a LANGS <<< "${LANGS:-kannada}"
read -r -a HOURS <<< "${HOURS:-1 2 5 10 0}"             # 0 = all transcribed train data
read -r -a SEEDS <<< "${SEEDS:-0}"
SOURCE="${SOURCE:-vaani}"
PREPARE_ARGS="${PREPARE_ARGS:---max-align-hours 100}"
VISION="${VISION:-siglip2}"
LOSS="${LOSS:-clip}"
INIT="${INIT:-nvidia/stt_en_fastconformer_hybrid_large_pc}"
ALIGN_STEPS="${ALIGN_STEPS:-20000}"
FT_STEPS="${FT_STEPS:-20000}"
BATCH="${BATCH:-32}"
DECODER="${DECODER:-hybrid-tdt-ctc}"
GPUS="${GPUS:-1}"
NODES="${NODES:-1}"
RUNS="${RUNS:-runs/data-efficiency}"
stage="${stage:-0}"
stop_stage="${stop_stage:-4}"

for lang in "${LANGS[@]}"; do
  for seed in "${SEEDS[@]}"; do
    aligned="$RUNS/$lang/aligned-s$seed"
    if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
      echo "== $lang seed $seed: the aligned encoder (trained once)"
      # shellcheck disable=SC2086
      avasr -r "$aligned" prepare --source "$SOURCE" --lang "$lang" --seed 0 $PREPARE_ARGS
      avasr -r "$aligned" embed-images --vision "$VISION"
      avasr -r "$aligned" align --vision "$VISION" --loss "$LOSS" --init "$INIT" --max-steps "$ALIGN_STEPS" \
        --batch-size "$BATCH" --seed "$seed" --gpus "$GPUS" --nodes "$NODES"
    fi
    for hours in "${HOURS[@]}"; do
      for arm in direct align; do
        dir="$RUNS/$lang/${arm}-h${hours}-s$seed"
        if [[ $arm == direct ]]; then init="$INIT"; else init="$aligned/align/encoder"; fi
        if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
          # shellcheck disable=SC2086
          avasr -r "$dir" prepare --source "$SOURCE" --lang "$lang" --seed 0 $PREPARE_ARGS
        fi
        if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
          avasr -r "$dir" finetune --init "$init" --train-hours "$hours" --decoder "$DECODER" \
            --max-steps "$FT_STEPS" --batch-size "$BATCH" --seed "$seed" --gpus "$GPUS" --nodes "$NODES"
        fi
        if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
          avasr -r "$dir" evaluate
        fi
      done
    done
  done
  if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
    avasr compare "$RUNS/$lang"/*-h*/ --plot "$RUNS/$lang/wer-vs-hours.png"
  fi
done
