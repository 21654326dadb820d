#!/usr/bin/env bash
# WER against transcribed hours, with and without alignment — the question the paper raises and leaves
# open. Per language (and seed) the continued-pretraining encoders are trained once: one aligned to the
# images for each loss in LOSSES, and the audio-only control on the same audio with the same budget.
# Then, for each amount of transcribed data, a direct run and a run fine-tuned from each of those
# encoders, all with the same fine-tuning budget: the aligned curve against the audio-only one separates
# "the images helped" from "more steps on more audio helped".
#
#   bash recipes/data_efficiency.sh
#   HOURS="1 2 5" SOURCE=builtin INIT=tiny bash recipes/data_efficiency.sh
# `avasr compare` then prints the curves and plots WER against train hours.
#
# Defaults (INIT=nvidia/ssl_en_nest_large_v1.0, LOSSES="clip maxsim", learning rates, warm-ups, head
# rates, layer decay, aligned layer) and their sources in NVIDIA/NeMo's published configs are those of
# recipes/vaani_paper.sh (see its header; computed in recipes/optim_defaults.sh). LOSS (one loss, as
# recipes/miniature_study.sh passes it) replaces LOSSES when set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

read -r -a LANGS <<< "${LANGS:-kannada}"
read -r -a HOURS <<< "${HOURS:-1 2 5 10 0}"             # 0 = all transcribed train data
read -r -a SEEDS <<< "${SEEDS:-0}"
SOURCE="${SOURCE:-vaani}"
PREPARE_ARGS="${PREPARE_ARGS:---max-align-hours 100}"
VISION="${VISION:-siglip2}"
read -r -a LOSSES <<< "${LOSS:-${LOSSES:-clip maxsim}}" # alignment losses: clip siglip maxsim
INIT="${INIT:-nvidia/ssl_en_nest_large_v1.0}"
ALIGN_STEPS="${ALIGN_STEPS:-20000}"
FT_STEPS="${FT_STEPS:-20000}"
BATCH="${BATCH:-32}"
DECODER="${DECODER:-hybrid-tdt-ctc}"
GPUS="${GPUS:-1}"
NODES="${NODES:-1}"
# shellcheck disable=SC1091 source=optim_defaults.sh
source "$here/optim_defaults.sh"                        # ALIGN_LR FT_LR *_WARMUP *_HEAD_LR_RATIO LAYER_DECAY ALIGN_LAYER
RUNS="${RUNS:-runs/data-efficiency}"
stage="${stage:-0}"
stop_stage="${stop_stage:-4}"

ENCODERS=()                                  # the continued-pretraining arms, each trained once
for l in "${LOSSES[@]}"; do ENCODERS+=("align-$l"); done
ENCODERS+=(audio-only)

for lang in "${LANGS[@]}"; do
  for seed in "${SEEDS[@]}"; do
    if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
      for enc in "${ENCODERS[@]}"; do
        dir="$RUNS/$lang/encoder-$enc-s$seed"
        echo "== $lang seed $seed: the $enc encoder (trained once)"
        # shellcheck disable=SC2086
        avasr -r "$dir" prepare --source "$SOURCE" --lang "$lang" --seed 0 $PREPARE_ARGS
        if [[ $enc == audio-only ]]; then
          objective=(--objective audio-only)
        else
          avasr -r "$dir" embed-images --vision "$VISION"
          objective=(--vision "$VISION" --loss "${enc#align-}")
        fi
        avasr -r "$dir" align "${objective[@]}" --init "$INIT" --max-steps "$ALIGN_STEPS" \
          --batch-size "$BATCH" --lr "$ALIGN_LR" --warmup-steps "$ALIGN_WARMUP" \
          --head-lr-ratio "$ALIGN_HEAD_LR_RATIO" --layer-decay "$LAYER_DECAY" --align-layer "$ALIGN_LAYER" \
          --seed "$seed" --gpus "$GPUS" --nodes "$NODES"
      done
    fi
    for hours in "${HOURS[@]}"; do
      for arm in direct "${ENCODERS[@]}"; do
        dir="$RUNS/$lang/${arm}-h${hours}-s$seed"
        if [[ $arm == direct ]]; then init="$INIT"; else init="$RUNS/$lang/encoder-$arm-s$seed/align/encoder"; fi
        if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
          # shellcheck disable=SC2086
          avasr -r "$dir" prepare --source "$SOURCE" --lang "$lang" --seed 0 $PREPARE_ARGS
        fi
        if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
          avasr -r "$dir" finetune --init "$init" --train-hours "$hours" --decoder "$DECODER" \
            --max-steps "$FT_STEPS" --batch-size "$BATCH" --lr "$FT_LR" --warmup-steps "$FT_WARMUP" \
            --head-lr-ratio "$FT_HEAD_LR_RATIO" --layer-decay "$LAYER_DECAY" --seed "$seed" --gpus "$GPUS" \
            --nodes "$NODES"
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
