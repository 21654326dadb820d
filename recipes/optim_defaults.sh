# shellcheck shell=bash
# Optimiser defaults shared by recipes/vaani_paper.sh and recipes/data_efficiency.sh (sourced by both,
# not run on its own). Reads INIT, BATCH, GPUS, NODES, ALIGN_STEPS and FT_STEPS; a variable already set
# in the environment wins. The sources of each figure are listed in the header of recipes/vaani_paper.sh.
#
# Encoders of avasr's own sizes (INIT auto, builtin-ssl, tiny, small, medium: the CPU miniature) keep
# the CLI's defaults, chosen for them. Any other INIT is taken to be a FastConformer-Large and gets
# NeMo's published rates scaled to this run's global batch G = BATCH x GPUS x NODES (the square-root
# rule for Adam: the rate grows with the square root of the batch):
#   encoder peak rate (align and finetune)   1e-4 x sqrt(G / 16)
#   new parts' rate (head, decoder, joint)    2 x the encoder's
#   warm-up                                   min(5000, steps / 10)
#   layer-wise decay                          1.0 (off); the aligned layer: -1 (the last)

processes=$(( (GPUS > 0 ? GPUS : 1) * NODES ))
global_batch=$(( BATCH * processes ))
case "$INIT" in
  auto|builtin-ssl|tiny|small|medium)
    encoder_lr_align=1e-3 encoder_lr_ft=2e-3 head_ratio=1 warm_align=30 warm_ft=40 ;;
  *)
    encoder_lr_align=$(awk -v g="$global_batch" 'BEGIN { printf "%.2g", 1e-4 * sqrt(g / 16) }')
    encoder_lr_ft=$encoder_lr_align head_ratio=2
    warm_align=$(( ALIGN_STEPS / 10 < 5000 ? ALIGN_STEPS / 10 : 5000 ))
    warm_ft=$(( FT_STEPS / 10 < 5000 ? FT_STEPS / 10 : 5000 )) ;;
esac
ALIGN_LR="${ALIGN_LR:-$encoder_lr_align}"
ALIGN_WARMUP="${ALIGN_WARMUP:-$warm_align}"
ALIGN_HEAD_LR_RATIO="${ALIGN_HEAD_LR_RATIO:-$head_ratio}"
FT_LR="${FT_LR:-$encoder_lr_ft}"
FT_WARMUP="${FT_WARMUP:-$warm_ft}"
FT_HEAD_LR_RATIO="${FT_HEAD_LR_RATIO:-$head_ratio}"
LAYER_DECAY="${LAYER_DECAY:-1.0}"
ALIGN_LAYER="${ALIGN_LAYER:--1}"
