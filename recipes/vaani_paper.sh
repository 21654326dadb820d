#!/usr/bin/env bash
# Reproduce the paper's study, then go past it: for each language and seed, the direct fine-tuning
# baseline, image alignment with each vision encoder and loss, the audio-only control with the same
# budget, and the two controls a positive effect needs before anyone may believe it (CONTROLS): the
# negative control (alignment on SHUFFLED pairs, for the first vision encoder and loss) and the
# equal-compute direct arm (fine-tuned for FT_STEPS + ALIGN_STEPS); fine-tuning and evaluation of every
# arm, then one `avasr compare` per language.
#
# Edit the variables below (or set them in the environment) and run:
#   bash recipes/vaani_paper.sh                      # everything
#   stage=3 stop_stage=4 bash recipes/vaani_paper.sh # only finetune + evaluate (e.g. after a crash)
# Each run directory is rerunnable: finished stages are skipped, killed training resumes.
# Vaani is gated: accept the terms of ARTPARK-IISc/Vaani and ARTPARK-IISc/Vaani-transcription-part on
# the hub and `hf auth login` (or export HF_TOKEN) first. SOURCE=builtin runs the same recipe offline.
#
# Defaults, and where each comes from (paths in github.com/NVIDIA/NeMo; the rates and warm-ups are
# computed in recipes/optim_defaults.sh, shared with recipes/data_efficiency.sh):
#   INIT=nvidia/ssl_en_nest_large_v1.0  NeMo's self-supervised NEST FastConformer-L (CC-BY-4.0), trained
#       with examples/asr/conf/ssl/nest/nest_fast-conformer.yaml; only its encoder and preprocessor are
#       used. Alternatives: nvidia/stt_en_fastconformer_hybrid_large_pc (supervised English ASR),
#       nvidia/stt_kn_fastconformer_hybrid_large_pc or nvidia/stt_hi_fastconformer_hybrid_large_pc
#       (supervised Kannada / Hindi), a local .nemo (ASR or SSL), or an `avasr pretrain` encoder directory.
#   LOSSES="clip maxsim"  pooled InfoNCE, and ColBERT-style late interaction (frames x patches).
#   ALIGN_LR, FT_LR = 1e-4 x sqrt(global batch / 16)  (1.4e-4 at BATCH=32 on one GPU): the AdamW peak
#       of NeMo's fine-tuning config, examples/asr/conf/asr_finetune/speech_to_text_finetune.yaml
#       (lr 1e-4, train_ds.batch_size 16, run on one GPU in NeMo's fine-tuning docs), scaled to
#       BATCH x GPUS x NODES by the square-root rule for Adam.
#   ALIGN_HEAD_LR_RATIO, FT_HEAD_LR_RATIO = 2: the parts trained from scratch (align: projection head,
#       temperature, SigLIP bias, the control's decoder; finetune: decoder, joint, CTC head) at NeMo's
#       from-scratch rate: NoamAnnealing lr 5.0, d_model 512, warmup_steps 10000 in
#       examples/asr/conf/fastconformer/hybrid_transducer_ctc/fastconformer_hybrid_tdt_ctc_bpe.yaml,
#       a peak of 5 / sqrt(512) / sqrt(10000) = 2.2e-3 at the 2K global batch that
#       examples/asr/conf/fastconformer/fast-conformer_transducer_bpe.yaml states; at equal batch
#       (same rule) that is 1.95 x the fine-tuning rate.
#   ALIGN_WARMUP, FT_WARMUP = min(5000, steps / 10): warmup_steps 5000 of speech_to_text_finetune.yaml,
#       at most a tenth of a shorter run (2000 align and 5000 fine-tuning steps at the defaults).
#   LAYER_DECAY=1.0 (off): none of these configs decays rates by layer. ALIGN_LAYER=-1: the last layer.
#   Weight decay 1e-3 and AdamW betas (0.9, 0.98) (avasr's defaults) are those of all the configs above;
#   biases, norms, the temperature and the SigLIP bias get no weight decay.
#   DECODER=hybrid-tdt-ctc (the paper's), laid out as fastconformer_hybrid_tdt_ctc_bpe.yaml.
# With INIT=auto/builtin-ssl/tiny/small/medium (avasr's CPU-sized encoders) the rates and warm-ups
# are the CLI's defaults instead, chosen for those encoders. Every variable can be set in the environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

read -r -a LANGS <<< "${LANGS:-kannada hindi}"          # Vaani language names
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"                  # align + finetune seeds (the data stay fixed)
read -r -a VISION <<< "${VISION:-siglip2 clip qwen3vl}" # vision encoders (registry names, hub ids, dirs)
read -r -a LOSSES <<< "${LOSSES:-clip maxsim}"          # alignment losses: clip siglip maxsim
CONTROLS="${CONTROLS:-shuffled equal-compute}"          # either, both or none ("")
SOURCE="${SOURCE:-vaani}"                               # vaani | builtin
PREPARE_ARGS="${PREPARE_ARGS:---max-align-hours 100}"   # extra prepare options (e.g. --dataset DIR)
INIT="${INIT:-nvidia/ssl_en_nest_large_v1.0}"          # start encoder: NeMo name, .nemo, encoder dir, tiny
ALIGN_STEPS="${ALIGN_STEPS:-20000}"
FT_STEPS="${FT_STEPS:-50000}"
BATCH="${BATCH:-32}"
DECODER="${DECODER:-hybrid-tdt-ctc}"                    # the paper's decoder
GPUS="${GPUS:-1}"
NODES="${NODES:-1}"
# shellcheck disable=SC1091 source=optim_defaults.sh
source "$here/optim_defaults.sh"                        # ALIGN_LR FT_LR *_WARMUP *_HEAD_LR_RATIO LAYER_DECAY ALIGN_LAYER
EXTRA_ALIGN_ARGS="${EXTRA_ALIGN_ARGS:-}"
EXTRA_FT_ARGS="${EXTRA_FT_ARGS:-}"
RUNS="${RUNS:-runs/vaani}"
stage="${stage:-0}"
stop_stage="${stop_stage:-5}"

run_dir() { echo "$RUNS/$1/$2-s$3"; }        # language, arm, seed
arms() {                                     # every arm of the study
  echo direct
  if [[ " $CONTROLS " == *" equal-compute "* ]]; then echo direct-equal-compute; fi
  echo audio-only
  local v l
  for v in "${VISION[@]}"; do for l in "${LOSSES[@]}"; do echo "align-${v//\//_}-$l"; done; done
  if [[ " $CONTROLS " == *" shuffled "* ]]; then echo "align-${VISION[0]//\//_}-${LOSSES[0]}-shuffled"; fi
}
arm_vision() { local a="${1#align-}"; a="${a%-shuffled}"; a="${a%-*}"; echo "${a//_//}"; }
arm_loss() { local a="${1%-shuffled}"; echo "${a##*-}"; }

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
      if [[ $arm != direct* && $stage -le 2 && $stop_stage -ge 2 ]]; then
        if [[ $arm == audio-only ]]; then
          objective=(--objective audio-only)
        else
          objective=(--vision "$(arm_vision "$arm")" --loss "$(arm_loss "$arm")")
          if [[ $arm == *-shuffled ]]; then objective+=(--pairs shuffled); fi
        fi
        # shellcheck disable=SC2086
        avasr -r "$dir" align "${objective[@]}" --init "$INIT" --max-steps "$ALIGN_STEPS" \
          --batch-size "$BATCH" --lr "$ALIGN_LR" --warmup-steps "$ALIGN_WARMUP" \
          --head-lr-ratio "$ALIGN_HEAD_LR_RATIO" --layer-decay "$LAYER_DECAY" --align-layer "$ALIGN_LAYER" \
          --seed "$seed" --gpus "$GPUS" --nodes "$NODES" $EXTRA_ALIGN_ARGS
      fi
      if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
        init=()
        steps=$FT_STEPS
        [[ $arm == direct* ]] && init=(--init "$INIT")
        [[ $arm == direct-equal-compute ]] && steps=$((FT_STEPS + ALIGN_STEPS))  # as many steps as an aligned arm
        # shellcheck disable=SC2086
        avasr -r "$dir" finetune "${init[@]}" --decoder "$DECODER" --max-steps "$steps" \
          --batch-size "$BATCH" --lr "$FT_LR" --warmup-steps "$FT_WARMUP" --head-lr-ratio "$FT_HEAD_LR_RATIO" \
          --layer-decay "$LAYER_DECAY" --seed "$seed" --gpus "$GPUS" --nodes "$NODES" $EXTRA_FT_ARGS
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
