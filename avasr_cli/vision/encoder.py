"""One transformers loading path for every vision encoder avasr uses.

``AutoConfig`` tells the architecture; only the vision tower is loaded (``SiglipVisionModel`` /
``Siglip2VisionModel`` / ``CLIPVisionModel`` accept full dual-tower checkpoints; the Qwen3-VL tower is
loaded from the full checkpoint with a key mapping, so the language model never reaches memory) and
images go through the model's own ``AutoImageProcessor``. Single-tower vision backbones of other
architectures (ViT-like) load through ``AutoModel``.

Every encoder returns a fixed number of patch tokens on a square-ish ``grid`` in raster order
(variable-resolution models get a fixed square input), so feature stores hold ``[N, P, D]`` arrays.
torch and transformers are imported inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from avasr_cli.errors import ConfigError, ModelLoadError, ResourceError
from avasr_cli.vision.registry import VisionSpec, resolve

SUPPORTED = ("siglip", "siglip2", "clip", "qwen3_vl", "qwen3_vl_moe")
QWEN_SIDE = 384  # square side (px) fed to Qwen3-VL: 24×24 patches → 12×12 merged tokens at patch 16
_QWEN_CLASS = {"qwen3_vl": "Qwen3VLVisionModel", "qwen3_vl_moe": "Qwen3VLMoeVisionModel"}
_TOWER_CLASS = {"siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel", "clip": "CLIPVisionModel"}


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    """What identifies an encoder's features; known from its config alone, before loading weights."""

    model_id: str  # hub id or absolute local path
    revision: str | None  # commit hash for hub ids, "local-<sha256[:16]>" of the files for local dirs
    label: str
    arch: str  # one of SUPPORTED or "generic"
    layer: int
    pooling: str  # "model" (the model's own pooled output) or "masked-mean" (mean of patch tokens)
    untrained: bool = False


def _hint(model: str) -> str:
    return (f"download it on a connected machine with `hf download {model}` and pass the local directory "
            "(--vision /path/to/dir), or set HF_HOME to a cache that holds it")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' info logs and progress bars while loading (results are ours to report)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------- inspect
def _hub_commit(model: str, revision: str | None) -> str:
    """Find the hub config (cache first, then the Hub); return the commit hash it lives at."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        try:  # cached snapshots load without touching the network (and without retries when it is down)
            path = Path(hf_hub_download(model, "config.json", revision=revision, local_files_only=True))
        except LocalEntryNotFoundError:
            path = Path(hf_hub_download(model, "config.json", revision=revision))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        rev = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"vision model {model}{rev} is not in the local Hugging Face cache and the Hub cannot be "
                             "reached (offline)", _hint(model)) from exc
    except Exception as exc:  # gated, unknown repo or revision, network errors
        rev = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"cannot load vision model {model}{rev}: {_one_line(exc)}", _hint(model)) from exc
    return path.parent.name if path.parent.parent.name == "snapshots" else (revision or "")


def _fingerprint(path: Path) -> str:
    """Content hash of a local model directory (config, processor, weights), cached by size and mtime."""
    from avasr_cli.run import avasr_home, write_json_atomic

    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin", ".pt")))
    cache_file = avasr_home() / "cache" / "fingerprints.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h = hashlib.sha256()
    changed = False
    for p in files:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            fh = hashlib.sha256()
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    fh.update(block)
            cache[key] = fh.hexdigest()
            changed = True
        h.update(f"{p.name}:{cache[key]}\n".encode())
    if changed:
        try:
            write_json_atomic(cache_file, cache)
        except OSError:
            pass
    return "local-" + h.hexdigest()[:16]


def _arch_of(config: Any) -> tuple[str, Any]:
    """(arch, vision config) of a loaded transformers config."""
    mt = getattr(config, "model_type", "")
    for arch in SUPPORTED:
        if mt == arch:
            return arch, config.vision_config
        if mt in (f"{arch}_vision_model", f"{arch}_vision"):
            return arch, config
    if getattr(config, "vision_config", None) is not None or getattr(config, "text_config", None) is not None:
        raise ModelLoadError(
            f"model type {mt!r} is not supported as a vision encoder",
            f"use one of {', '.join(SUPPORTED)} (or a single-tower vision model such as ViT); see `avasr embed-images --list`",
        )
    return "generic", config


def _num_layers(vcfg: Any) -> int | None:
    for key in ("num_hidden_layers", "depth"):
        if isinstance(getattr(vcfg, key, None), int):
            return getattr(vcfg, key)
    return None


def _load_config(model: str, revision: str | None, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        with _quiet():
            return AutoConfig.from_pretrained(model, revision=revision, **kwargs)
    except Exception as exc:
        hint = ("pass --trust-remote-code if you trust this model's code" if "trust_remote_code" in str(exc)
                else _hint(model))
        raise ModelLoadError(f"cannot read the config of vision model {model}: {_one_line(exc)}", hint) from exc


def inspect_vision_model(spec_or_name: VisionSpec | str, *, revision: str | None = None,
                         trust_remote_code: bool = False, layer: int = -1) -> tuple[EncoderInfo, Any]:
    """Resolve a model to the identity of its features (no weights loaded); returns (info, config)."""
    spec = resolve(spec_or_name, revision) if isinstance(spec_or_name, str) else spec_or_name
    rev = revision if revision is not None else spec.revision
    if spec.is_local:
        path = Path(spec.model).resolve()
        model_id, pinned = str(path), _fingerprint(path)
        load_rev = None
    else:
        model_id = spec.model
        pinned = load_rev = _hub_commit(model_id, rev) or rev
    config = _load_config(model_id, load_rev, trust_remote_code)
    arch, vcfg = _arch_of(config)
    n = _num_layers(vcfg)
    if n is not None and not -(n + 1) <= layer <= n:
        raise ConfigError(f"layer {layer} is out of range for {model_id} ({n} layers: use -{n + 1}..{n}, -1 = last)",
                          "pick a layer inside the model, e.g. -1 (last) or -2 (penultimate)")
    has_head = arch == "clip" or (arch in ("siglip", "siglip2") and getattr(vcfg, "vision_use_head", True))
    pooling = "model" if layer == -1 and has_head else "masked-mean"
    untrained = spec.untrained or bool(getattr(config, "avasr_untrained", False))
    label = spec.label or model_id
    return EncoderInfo(model_id, pinned, label, arch, layer, pooling, untrained), config


# --------------------------------------------------------------------------------------------- preprocessing
def _size_get(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


class ImagePreprocessor:
    """Picklable: PIL images → the model's input tensors (runs in DataLoader workers)."""

    def __init__(self, processor: Any, square: int | None = None):
        self.processor = processor
        self.square = square

    def __call__(self, images: list) -> dict:
        from PIL import Image

        imgs = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        if self.square:
            imgs = [im.resize((self.square, self.square), Image.BICUBIC) for im in imgs]
        return dict(self.processor(images=imgs, return_tensors="pt"))


def _square_side(arch: str, processor: Any) -> int | None:
    """Variable-resolution models get a fixed square input so every image yields the same patch grid."""
    if arch == "siglip2":
        patch = int(getattr(processor, "patch_size", 16))
        return patch * max(1, math.isqrt(int(getattr(processor, "max_num_patches", 256))))
    if arch.startswith("qwen3_vl"):
        factor = int(getattr(processor, "patch_size", 16)) * int(getattr(processor, "merge_size", 2))
        size = getattr(processor, "size", None)
        lo = _size_get(size, "shortest_edge") or getattr(processor, "min_pixels", None) or 0
        hi = _size_get(size, "longest_edge") or getattr(processor, "max_pixels", None) or QWEN_SIDE**2
        side = min(max(QWEN_SIDE, math.isqrt(int(lo))), math.isqrt(int(hi)))
        side = max(factor, side // factor * factor)
        if side * side < lo:
            side += factor
        return side
    return None


# --------------------------------------------------------------------------------------------- encoder
class VisionEncoder:
    """A loaded vision tower: ``embed(images) -> (pooled [B, D], patches [B, P, D])`` as float32 CPU tensors."""

    def __init__(self, info: EncoderInfo, model: Any, processor: Any, device: Any, dtype: Any):
        self.info = info
        self.model = model
        self.device = device
        self.dtype = dtype
        self.preprocessor = ImagePreprocessor(processor, _square_side(info.arch, processor))
        self.model_id, self.revision, self.label = info.model_id, info.revision, info.label
        self.layer, self.pooling, self.arch, self.untrained = info.layer, info.pooling, info.arch, info.untrained
        from PIL import Image

        pooled, patches = self.embed([Image.new("RGB", (64, 64), (128, 128, 128))])  # probe the shapes
        self.dim = int(patches.shape[-1])
        self.num_patches = int(patches.shape[1])
        self.grid = self._grid
        if pooled.shape[-1] != self.dim:
            raise ModelLoadError(f"{self.model_id}: pooled dim {pooled.shape[-1]} differs from patch dim {self.dim}",
                                 "use --layer -1 or a model whose pooled output matches its tokens")

    def embed(self, images: list) -> tuple:
        return self.forward(self.preprocessor(images))

    def forward(self, batch: dict) -> tuple:
        """Model inputs from :attr:`preprocessor` → (pooled, patches), float32 on the CPU."""
        import torch

        batch = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                 for k, v in batch.items() if hasattr(v, "to")}
        want_hidden = self.layer != -1
        with torch.inference_mode():
            if self.arch.startswith("qwen3_vl"):
                out = self.model(batch["pixel_values"], grid_thw=batch["image_grid_thw"], output_hidden_states=want_hidden)
                pooled, patches = self._qwen(out, batch["image_grid_thw"])
            else:
                out = self.model(**batch, output_hidden_states=want_hidden)
                pooled, patches = self._tower(out, batch)
        return pooled.float().cpu(), patches.float().cpu()

    def _tower(self, out: Any, batch: dict) -> tuple:
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        b, t, _ = hidden.shape
        if self.arch == "siglip2":
            h, w = (int(x) for x in batch["spatial_shapes"][0])
            patches = hidden[:, : h * w]
        else:
            side = int(getattr(self.model.config, "image_size", 0)) // int(getattr(self.model.config, "patch_size", 1))
            h = w = side if side > 0 and side * side <= t else math.isqrt(t)
            patches = hidden[:, t - h * w :]  # drop CLS / register tokens in front
        self._grid = (h, w)
        pooled = out.pooler_output if self.pooling == "model" else patches.mean(dim=1)
        return pooled, patches

    def _qwen(self, out: Any, grid_thw: Any) -> tuple:
        t, gh, gw = (int(x) for x in grid_thw[0])
        b = grid_thw.shape[0]
        m = int(self.model.config.spatial_merge_size)
        if self.layer == -1:  # merged tokens (the language model's input space), raster over (gh/m, gw/m)
            patches = out.pooler_output.reshape(b, t * (gh // m) * (gw // m), -1)
            self._grid = (gh // m, gw // m)
        else:  # block outputs come in m×m window order: put them back in raster order
            hidden = out.hidden_states[self.layer].reshape(b, t, gh // m, gw // m, m, m, -1)
            patches = hidden.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t * gh * gw, -1)
            self._grid = (gh, gw)
        return patches.mean(dim=1), patches


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ResourceError(f"device {device} requested but no CUDA GPU is visible", "use --device cpu (or auto)")
    return device


def load_vision_encoder(spec_or_name: VisionSpec | str, *, revision: str | None = None, device: str = "cpu",
                        dtype: Any = None, trust_remote_code: bool = False, layer: int = -1) -> VisionEncoder:
    """Load the vision tower and image processor of a registry name, hub id or local directory."""
    info, config = inspect_vision_model(spec_or_name, revision=revision, trust_remote_code=trust_remote_code, layer=layer)
    return load_inspected(info, config, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


def load_inspected(info: EncoderInfo, config: Any, *, device: str = "cpu", dtype: Any = None,
                   trust_remote_code: bool = False) -> VisionEncoder:
    """Second half of :func:`load_vision_encoder`, for callers that inspected the model already."""
    import torch
    import transformers
    from transformers import AutoImageProcessor

    device = resolve_device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    load_rev = None if os.path.isdir(info.model_id) else info.revision
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        with _quiet():
            processor = AutoImageProcessor.from_pretrained(info.model_id, revision=load_rev, **extra)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the image processor of {info.model_id}: {_one_line(exc)}",
                             "save it next to the model (image_processor.save_pretrained(dir)) or " + _hint(info.model_id)) from exc
    kwargs: dict = {"revision": load_rev, "dtype": dtype, "output_loading_info": True, **extra}
    try:
        with _quiet():
            if info.arch.startswith("qwen3_vl"):
                cls = getattr(transformers, _QWEN_CLASS[info.arch])
                vcfg = getattr(config, "vision_config", None) or config
                model, loading = cls.from_pretrained(info.model_id, config=vcfg,
                                                     key_mapping={r"^(?:model\.)?visual\.": ""}, **kwargs)
            elif info.arch in _TOWER_CLASS:
                model, loading = getattr(transformers, _TOWER_CLASS[info.arch]).from_pretrained(info.model_id, **kwargs)
            else:
                model, loading = transformers.AutoModel.from_pretrained(info.model_id, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load vision model {info.model_id}: {_one_line(exc)}", _hint(info.model_id)) from exc
    missing = [k for k in loading.get("missing_keys", ()) if "position_ids" not in k]
    if missing:
        raise ModelLoadError(f"{info.model_id}: {len(missing)} vision weights missing from the checkpoint (e.g. {sorted(missing)[0]})",
                             "check that the directory holds the full model weights (model.safetensors)")
    model = model.to(device).eval()
    return VisionEncoder(info, model, processor, device, dtype)


def pool_patches(patches: Any, grid: tuple[int, int], k: int) -> Any:
    """Average-pool patch tokens ``[B, h*w, D]`` on their ``grid`` to a ``k×k`` grid ``[B, k*k, D]``."""
    import torch.nn.functional as F

    b, p, d = patches.shape
    h, w = grid
    x = patches.transpose(1, 2).reshape(b, d, h, w)
    return F.adaptive_avg_pool2d(x, (k, k)).flatten(2).transpose(1, 2).contiguous()
