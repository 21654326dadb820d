"""The masked-token objective (NeMo's NEST / BEST-RQ), used by ``avasr align --objective audio-only`` (the
control) and by ``avasr pretrain`` (the starting encoder): its settings, their validation, and the NeMo
modules that compute it.

Settings are those of NeMo's FastConformer SSL recipe (``examples/asr/conf/ssl/nest/nest_fast-conformer.yaml``):
8192 codes in one codebook of dimension 16, l2 distance, pre-convolution block masking of 40 frames
(400 ms) with overlap, starting at each frame with probability 0.01 (about a third of the frames masked),
and a frame counts as masked for the loss when 80 % of its 8 input frames are.

Importing this module is cheap (no torch): the modules are built by :func:`build_objective`.
"""

from __future__ import annotations

from avasr_cli.errors import at_least_one

SSL_DEFAULTS = dict(num_codes=8192, code_dim=16, dist_fn="l2", mask_prob=0.01, block_size=40, allow_overlap=True,
                    mask_threshold=0.8)
# the three a user sets (--ssl-mask-prob, --ssl-block-size, --ssl-codebook-size)
SSL_MASK_PROB, SSL_BLOCK_SIZE, SSL_CODEBOOK_SIZE = (SSL_DEFAULTS["mask_prob"], SSL_DEFAULTS["block_size"],
                                                    SSL_DEFAULTS["num_codes"])


def ssl_settings(cfg) -> dict:
    """The objective's settings from a stage config with ``ssl_*`` fields."""
    return {"mask_prob": cfg.ssl_mask_prob, "block_size": cfg.ssl_block_size, "num_codes": cfg.ssl_codebook_size}


def ssl_problems(cfg) -> list[str]:
    problems = [] if 0.0 < cfg.ssl_mask_prob < 1.0 else ["--ssl-mask-prob must be in (0, 1)"]
    problems += at_least_one(cfg, ("ssl_block_size",))
    if cfg.ssl_codebook_size < 2:
        problems.append("--ssl-codebook-size must be at least 2")
    return problems


def build_objective(features: int, d_model: int, subsampling: int, **settings):
    """BEST-RQ style masked token prediction, wired exactly as NeMo's ``EncDecMaskedTokenPredModel``
    (pre-convolution masking) from NeMo's own modules: an ``nn.Module`` holding the random-projection
    ``quantizer``, block ``masking``, multi-softmax ``decoder`` and masked-LM ``loss``, and ``settings``."""
    from nemo.collections.asr.losses.ssl_losses.mlm import MultiMLMLoss
    from nemo.collections.asr.modules import MultiSoftmaxDecoder, RandomBlockMasking, RandomProjectionVectorQuantizer
    from torch import nn

    unknown = set(settings) - set(SSL_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown audio-only settings: {sorted(unknown)}")
    objective = nn.Module()
    objective.settings = s = {**SSL_DEFAULTS, **settings}
    # NeMo's quantizer compares unit-normalised projections with unit-normalised codes, so the nearest
    # code in l2 is exactly the most similar one in cosine (|x - c|^2 = 2 - 2 x.c). NeMo computes l2 by
    # broadcasting a [B, T, 16, 8192] difference (0.5 s a batch on a CPU core, more than the encoder);
    # its cosine path is one matrix product. Same codebook, same tokens (test_ssl_l2_tokens_are_nemos).
    dist = "cosine" if s["dist_fn"] == "l2" else s["dist_fn"]
    objective.quantizer = RandomProjectionVectorQuantizer(feat_in=features, code_dim=s["code_dim"],
                                                          num_classes=s["num_codes"], num_books=1, dist_fn=dist,
                                                          combine_time_steps=subsampling, squeeze_single=True)
    objective.masking = RandomBlockMasking(feat_in=features, mask_prob=s["mask_prob"], block_size=s["block_size"],
                                           allow_overlap=s["allow_overlap"])
    objective.decoder = MultiSoftmaxDecoder(feat_in=d_model, num_classes=s["num_codes"], num_decoders=1,
                                            squeeze_single=True)
    objective.loss = MultiMLMLoss(combine_time_steps=subsampling, mask_threshold=s["mask_threshold"], num_decoders=1,
                                  squeeze_single=True)
    objective.float()  # NeMo builds the codebooks in float64
    return objective
