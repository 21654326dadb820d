"""``--init`` of a self-supervised ``.nemo`` (what ``nvidia/ssl_en_nest_large_v1.0`` is: NeMo's NEST
``EncDecDenoiseMaskedTokenPredModel``, not an ASRModel): a tiny one is built on the fly with NeMo's own
SSL classes, saved with ``save_to``, and fine-tuning starts from its encoder and preprocessor."""

import pytest
from omegaconf import OmegaConf

from avasr_cli.models.fastconformer import NAMED_CONFIGS, encoder_config, preprocessor_config, state_sha256
from avasr_cli.stages.align import AlignConfig, run_align
from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

TINY_FT = dict(decoder="ctc", max_steps=2, batch_size=6, val_every=2, workers=0, warmup_steps=1)


def ssl_config(mask_position: str) -> dict:
    """NEST's layout (examples/asr/conf/ssl/nest/nest_fast-conformer.yaml) at the tiny encoder's size."""
    enc = encoder_config(**NAMED_CONFIGS["tiny"])
    codes, books = 32, 1
    return {
        "sample_rate": 16000, "num_classes": codes, "num_books": books, "code_dim": 8, "squeeze_single": False,
        "mask_position": mask_position,
        "preprocessor": preprocessor_config(80, pad_to=16),
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", "freq_masks": 0,
                         "time_masks": 0, "freq_width": 27, "time_width": 0.05},
        "masking": {"_target_": "nemo.collections.asr.modules.RandomBlockMasking", "block_size": 40,
                    "mask_prob": 0.01, "feat_in": 80, "freeze": True, "allow_overlap": True},
        "quantizer": {"_target_": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer", "feat_in": 80,
                      "code_dim": 8, "num_books": books, "num_classes": codes, "dist_fn": "l2", "freeze": True,
                      "squeeze_single": False, "combine_time_steps": 8},
        "encoder": enc,
        "decoder": {"_target_": "nemo.collections.asr.modules.MultiSoftmaxDecoder", "feat_in": enc["d_model"],
                    "num_classes": codes, "num_decoders": books, "squeeze_single": False, "use_bias": True},
        "loss": {"_target_": "nemo.collections.asr.losses.MultiMLMLoss", "combine_time_steps": 8,
                 "mask_threshold": 0.8, "num_decoders": books, "squeeze_single": False},
        "optim": {"name": "adamw", "lr": 1e-3},
    }


def save_ssl(tmp_path, cls_name: str, mask_position: str):
    """→ (path of the .nemo, the plain encoder weights it holds)."""
    from nemo.collections.asr.models import ssl_models

    model = getattr(ssl_models, cls_name)(cfg=OmegaConf.create(ssl_config(mask_position)))
    path = tmp_path / f"ssl-{mask_position}.nemo"
    model.save_to(str(path))
    state = model.encoder.state_dict()
    if mask_position == "post_conv":  # NeMo wraps the subsampling with its masking: the plain keys
        state = {k.replace("pre_encode.pre_encode.", "pre_encode.", 1): v for k, v in state.items()
                 if not k.startswith("pre_encode.masking.")}
    return path, state


@pytest.mark.parametrize("cls_name, mask_position", [("EncDecDenoiseMaskedTokenPredModel", "pre_conv"),
                                                     ("EncDecMaskedTokenPredModel", "post_conv")])
def test_finetune_starts_from_an_ssl_nemo(run, tmp_path, cls_name, mask_position):
    path, state = save_ssl(tmp_path, cls_name, mask_position)
    result = run_finetune(run, FinetuneConfig(**dict(TINY_FT, init=str(path))))
    assert result.init_kind == "init" and result.init == str(path) and result.steps == 2
    assert result.encoder_sha256 == state_sha256(state)  # exactly the SSL model's encoder
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(run.finetune_dir / "model.nemo"), map_location="cpu")
    assert model.cfg.preprocessor.features == 80 and model.cfg.preprocessor.normalize == "per_feature"


def test_align_starts_from_an_ssl_nemo(run, tmp_path):
    path, state = save_ssl(tmp_path, "EncDecDenoiseMaskedTokenPredModel", "pre_conv")
    result = run_align(run, AlignConfig(max_steps=2, batch_size=6, workers=0, warmup_steps=1, init=str(path)))
    assert result.init_sha256 == state_sha256(state) and result.steps == 2
