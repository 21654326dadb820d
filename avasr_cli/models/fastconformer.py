"""FastConformer encoders: named small configs, ``.nemo`` files and NeMo pretrained names, and the
encoder bundle (``encoder.safetensors`` + ``encoder.json``) that align writes and finetune reads.

The configs are built in code (no FastConformer YAML ships in the NeMo wheel) and follow NeMo's
FastConformer recipe: 8x depthwise-striding subsampling, relative-position attention, conv kernel 9.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avasr_cli.errors import InputError, ModelLoadError

# Named configs for machines without a pretrained checkpoint. "tiny" trains on a laptop CPU in minutes.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(features=80, d_model=64, n_layers=2, n_heads=4, conv_channels=48, ff=2),
    "small": dict(features=80, d_model=176, n_layers=8, n_heads=4, conv_channels=176, ff=4),
    "medium": dict(features=80, d_model=256, n_layers=16, n_heads=4, conv_channels=256, ff=4),
}


def preprocessor_config(features: int = 80, pad_to: int = 0) -> dict:
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "sample_rate": 16000,
        "normalize": "per_feature",
        "window_size": 0.025,
        "window_stride": 0.01,
        "window": "hann",
        "features": features,
        "n_fft": 512,
        "log": True,
        "frame_splicing": 1,
        "dither": 1e-5,
        "pad_to": pad_to,
        "pad_value": 0.0,
    }


def encoder_config(features: int, d_model: int, n_layers: int, n_heads: int, conv_channels: int, ff: int) -> dict:
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": features,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": conv_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": ff,
        "self_attention_model": "rel_pos",
        "n_heads": n_heads,
        "att_context_size": [-1, -1],
        "xscaling": True,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "dropout": 0.1,
        "dropout_pre_encoder": 0.1,
        "dropout_emb": 0.0,
        "dropout_att": 0.1,
    }


@dataclass
class EncoderBundle:
    """An encoder with the preprocessor it expects: everything finetune needs to start from it."""

    preprocessor: dict
    encoder: dict
    state_dict: dict  # encoder weights (tensors)
    source: str  # what it came from: "tiny (seed 0, random init)", a .nemo path, a pretrained name
    history: list  # stages that trained it, e.g. [{"stage": "align", "objective": "image", ...}]

    @property
    def d_model(self) -> int:
        return int(self.encoder["d_model"])

    def weights_sha256(self) -> str:
        """A content hash of the encoder weights (names, dtypes, shapes and bytes), so that a checkpoint
        or a later stage can tell which starting encoder it was made from."""
        return state_sha256(self.state_dict)

    def build_encoder(self):
        from nemo.collections.asr.modules import ConformerEncoder

        kwargs = {k: v for k, v in self.encoder.items() if k != "_target_"}
        enc = ConformerEncoder(**kwargs)
        enc.load_state_dict(self.state_dict, strict=True)
        return enc

    def build_preprocessor(self):
        from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

        kwargs = {k: v for k, v in self.preprocessor.items() if k != "_target_"}
        return AudioToMelSpectrogramPreprocessor(**kwargs)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        from avasr_cli.run import atomic_path, write_json_atomic

        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "encoder.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict.items()}, str(tmp))
        write_json_atomic(directory / "encoder.json", {
            "format": "avasr-encoder-v1", "preprocessor": self.preprocessor, "encoder": self.encoder,
            "source": self.source, "history": self.history,
        })

    @classmethod
    def load(cls, directory: Path) -> "EncoderBundle":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta_path, weights = Path(directory) / "encoder.json", Path(directory) / "encoder.safetensors"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InputError(f"cannot read encoder description {meta_path} ({exc})", "rerun `avasr align --force`") from exc
        if meta.get("format") != "avasr-encoder-v1":
            raise InputError(f"{meta_path} is not an avasr encoder (format {meta.get('format')!r})",
                             "point --init at a .nemo file or a directory written by `avasr align`")
        try:
            state = load_file(str(weights))
        except (OSError, SafetensorError) as exc:
            raise InputError(f"cannot read encoder weights {weights} ({exc})", "rerun `avasr align --force`") from exc
        return cls(meta["preprocessor"], meta["encoder"], state, meta.get("source", "?"), meta.get("history", []))


def state_sha256(state: dict) -> str:
    import hashlib

    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_init_file(init: str) -> None:
    """Cheap checks of an ``--init`` that names a file, before NeMo is imported: a .nemo checkpoint is a tar
    archive; any other existing file is the wrong kind of checkpoint."""
    import tarfile

    path = Path(init).expanduser()
    if init in NAMED_CONFIGS or (path / "encoder.json").is_file() or not (path.suffix == ".nemo" or path.exists()):
        return
    if not path.is_file():
        raise InputError(f"--init {init}: file not found", "give a .nemo file, a NeMo pretrained name, or one of: "
                         + ", ".join(NAMED_CONFIGS))
    if path.suffix != ".nemo":
        raise InputError(f"--init {init}: not a NeMo checkpoint (expected a .nemo file)",
                         "give a .nemo file, a NeMo pretrained name, a directory written by `avasr align`, or one of: "
                         + ", ".join(NAMED_CONFIGS))
    if not tarfile.is_tarfile(path):
        raise ModelLoadError(f"--init {init}: not a valid .nemo file (not a tar archive: corrupt or truncated)",
                             "check the file is a NeMo ASR checkpoint (.nemo) and copy it again")


def warn_untrusted_nemo(path: Path) -> None:
    """One line on stderr before NeMo restores a ``.nemo`` the user named: NeMo 3.0 builds the classes its
    config names (an allow-list of NeMo and torch classes) and unpickles its weights with torch's default,
    weights-only unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set, when any code in the file runs."""
    import os
    import sys

    full = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")
    how = ("in full, as TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: the file can run any code" if full else
           "weights-only, as TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is unset")
    print(f"Warning: --init {path}: NeMo builds the classes named in a .nemo's config and unpickles its weights "
          f"({how}); load only .nemo files you trust", file=sys.stderr, flush=True)


def restore_asr_model(path_or_name: str, pretrained: bool = False):
    """Stock ``ASRModel.restore_from`` (or ``from_pretrained``) on the CPU. NeMo sets a process-wide
    "model being restored" flag and clears it only when the restore succeeds; a refused file (a pickle in
    its weights, a class outside the allow-list) would leave it set, and every model built later in the
    same process would then skip its data set-up. The flag is cleared whatever happens."""
    from nemo.collections.asr.models import ASRModel

    try:
        if pretrained:
            return ASRModel.from_pretrained(path_or_name, map_location="cpu")
        return ASRModel.restore_from(path_or_name, map_location="cpu")
    finally:
        ASRModel._set_model_restore_state(is_being_restored=False)


def load_init(init: str, seed: int = 0) -> EncoderBundle:
    """``init`` is a named config (tiny/small/medium), a ``.nemo`` file, a directory written by
    ``avasr align`` (encoder.json), or a NeMo pretrained name (from NeMo's cache when offline).

    A ``.nemo`` or name may be an ASR model or a self-supervised one (NeMo's SSL models, e.g. NEST's
    ``EncDecDenoiseMaskedTokenPredModel`` behind ``nvidia/ssl_en_nest_large_v1.0``): NeMo restores the
    class the checkpoint names, and only its encoder and preprocessor are taken (the SSL decoder,
    quantizer and masking are dropped)."""
    import torch

    if init in NAMED_CONFIGS:
        p = NAMED_CONFIGS[init]
        pre, enc = preprocessor_config(p["features"]), encoder_config(**p)
        from nemo.collections.asr.modules import ConformerEncoder

        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        module = ConformerEncoder(**{k: v for k, v in enc.items() if k != "_target_"})
        torch.random.set_rng_state(state)
        return EncoderBundle(pre, enc, module.state_dict(), f"{init} (random init, seed {seed})", [])
    path = Path(init).expanduser()
    if path.is_dir() and (path / "encoder.json").exists():
        return EncoderBundle.load(path)
    if path.suffix == ".nemo" or path.exists():
        check_init_file(init)
        warn_untrusted_nemo(path)
        try:
            model = restore_asr_model(str(path))
        except Exception as exc:  # NeMo raises many kinds here; torch's weights-only refusal runs to paragraphs
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
            first = next((line for line in lines if "GLOBAL" in line), lines[0])  # the class a pickle asked for
            raise ModelLoadError(f"--init {init}: cannot restore the .nemo file ({type(exc).__name__}: {first})",
                                 "check the file is a NeMo ASR checkpoint (.nemo) and not truncated") from exc
        return _bundle_from_model(model, str(path))
    if "/" in init or init.startswith("stt_"):
        try:
            model = restore_asr_model(init, pretrained=True)
        except Exception as exc:
            raise ModelLoadError(f"--init {init}: cannot load the pretrained model ({type(exc).__name__})",
                                 "download it on a connected machine (it lands in NeMo's cache) or pass a local .nemo file") from exc
        return _bundle_from_model(model, init)
    raise InputError(f"--init {init}: not a named config, .nemo file or pretrained name",
                     "use one of " + ", ".join(NAMED_CONFIGS) + ", a path to a .nemo file, or e.g. nvidia/stt_kn_fastconformer_hybrid_large_pc")


def _bundle_from_model(model, source: str) -> EncoderBundle:
    from omegaconf import OmegaConf

    if not hasattr(model, "encoder") or not hasattr(model.cfg, "preprocessor"):
        raise ModelLoadError(f"{source} has no speech encoder and preprocessor", "use a NeMo ASR or SSL checkpoint")
    pre = OmegaConf.to_container(model.cfg.preprocessor, resolve=True)
    enc = OmegaConf.to_container(model.cfg.encoder, resolve=True)
    if "ConformerEncoder" not in str(enc.get("_target_", "")):
        raise ModelLoadError(f"{source} has encoder {enc.get('_target_')}, not a (Fast)Conformer",
                             "use a FastConformer checkpoint")
    from nemo.collections.asr.modules.ssl_modules.masking import ConvFeatureMaksingWrapper

    if isinstance(model.encoder.pre_encode, ConvFeatureMaksingWrapper):
        # an SSL model that masks after the subsampling (mask_position: post_conv) wraps the encoder's
        # subsampling together with its masking: the plain encoder's subsampling is the one inside
        model.encoder.pre_encode = model.encoder.pre_encode.pre_encode
    return EncoderBundle(pre, enc, {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}, source, [])
