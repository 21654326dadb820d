#!/usr/bin/env bash
# Reproduce the paper's study, then go past it: for each language and seed, the direct fine-tuning
# baseline, image alignment with each vision encoder and loss, the audio-only control with the same
# budget, fine-tuning and evaluation of every arm, then one `avasr compare` per language.
#
# Edit the variables below (or set them in the environment) and run:
#   bash recipes/vaani_paper.sh                      # everything
#   stage=3 stop_stage=4 bash recipes/vaani_paper.sh # only finetune + evaluate (e.g. after a crash)
# Each run directory is rerunnable: finished stages are skipped, killed training resumes.
# Vaani is gated: accept the terms of ARTPARK-IISc/Vaani and ARTPARK-IISc/Vaani-transcription-part on
# the hub and `hf auth login` (or export HF_TOKEN) first. SOURCE=builtin runs the same recipe offline.
set -euo pipefail

read -r -a LANGS <<< "${LANGS:-kannada hindi}"          # Vaani language names
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"                  # align + finetune seeds (the data stay fixed)
read -r -a VISION <<< "${VISION:-siglip2 clip qwen3vl}" # vision encoders (registry names, hub ids, dirs)
read -r -a LOSSES <<< "${LOSSES:-clip}"                 # alignment losses: clip siglip maxsim
SOURCE="${SOURCE:-vaani}"                               # vaani | builtin
PREPARE_ARGS="${PREPARE_ARGS:---max-align-hours 100}"   # extra prepare options (e.g. --dataset DIR)
INIT="${INIT:-nvidia/stt_en_fastconformer_hybrid_large_pc}" # start encoder (set the paper's): .nemo, NeMo name, tiny
ALIGN_STEPS="${ALIGN_STEPS:-20000}"
FT_STEPS="${FT_STEPS:-50000}"
BATCH="${BATCH:-32}"
DECODER="${DECODER:-hybrid-tdt-ctc}"                    # the paper's decoder
GPUS="${GPUS:-1}"
NODES="${NODES:-1}"
EXTRA_ALIGN_ARGS="${EXTRA_ALIGN_ARGS:-}"
EXTRA_FT_ARGS="${EXTRA_FT_ARGS:-}"
RUNS="${RUNS:-runs/vaani}"
stage="${stage:-0}"
stop_stage="${stop_stage:-5}"

run_dir() { echo "$RUNS/$1/$2-s$3"; }        # language, arm, seed
arms() {                                     # every arm of the study
  echo direct
  echo audio-only
  local v l
  for v in "${VISION[@]}"; do for l in "${LOSSES[@]}"; do echo "align-${v//\//_}-$l"; done; done
}
arm_vision() { local a="${1#align-}"; a="${a%-*}"; echo "${a//_//}"; }
arm_loss() { echo "${1##*-}"; }

for lang in "${LANGS[@]}"; do
  for seed in "${SEEDS[@]}"; do
    while read -r arm; do
      dir=$(run_dir "$lang" "$arm" "$seed")

      if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
        # shellcheck disable=SC2086
        avasr -r "$dir" prepare --source "$SOURCE" --lang "$lang" --seed 0 $PREPARE_ARGS
      fi
      if [[ $arm == align-* && $stage -le 1 && $stop_stage -ge 1 ]]; then
        avasr -r "$dir" embed-images --vision "$(arm_vision "$arm")"
      fi
      if [[ $arm != direct && $stage -le 2 && $stop_stage -ge 2 ]]; then
        if [[ $arm == audio-only ]]; then
          objective=(--objective audio-only)
        else
          objective=(--vision "$(arm_vision "$arm")" --loss "$(arm_loss "$arm")")
        fi
        # shellcheck disable=SC2086
        avasr -r "$dir" align "${objective[@]}" --init "$INIT" --max-steps "$ALIGN_STEPS" \
          --batch-size "$BATCH" --seed "$seed" --gpus "$GPUS" --nodes "$NODES" $EXTRA_ALIGN_ARGS
      fi
      if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
        init=()
        [[ $arm == direct ]] && init=(--init "$INIT")
        # shellcheck disable=SC2086
        avasr -r "$dir" finetune "${init[@]}" --decoder "$DECODER" --max-steps "$FT_STEPS" \
          --batch-size "$BATCH" --seed "$seed" --gpus "$GPUS" --nodes "$NODES" $EXTRA_FT_ARGS
      fi
      if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
        avasr -r "$dir" evaluate
      fi
    done < <(arms)
  done
  if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
    avasr compare "$RUNS/$lang"/*/ --plot "$RUNS/$lang/compare.png"
    avasr compare "$RUNS/$lang"/*/ --format markdown > "$RUNS/$lang/compare.md"
  fi
done
