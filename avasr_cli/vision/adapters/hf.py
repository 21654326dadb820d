"""transformers vision towers: SigLIP, SigLIP2, CLIP, the Qwen3-VL tower, and single-tower backbones (ViT-like).

``AutoConfig`` tells the architecture; only the vision tower is loaded (``SiglipVisionModel`` /
``Siglip2VisionModel`` / ``CLIPVisionModel`` accept full dual-tower checkpoints; the Qwen3-VL tower is
loaded from the full checkpoint with a key mapping, so the language model never reaches memory) and
images go through the model's own ``AutoImageProcessor``. Every model gives a fixed number of patch
tokens on a square-ish grid in raster order (variable-resolution models get a fixed square input).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from avasr_cli.errors import ConfigError, ModelLoadError
from avasr_cli.vision.base import EncoderInfo, VisionSpec, one_line, quiet

SUPPORTED = ("siglip", "siglip2", "clip", "qwen3_vl", "qwen3_vl_moe")
QWEN_SIDE = 384  # square side (px) fed to Qwen3-VL: 24×24 patches → 12×12 merged tokens at patch 16
_QWEN_CLASS = {"qwen3_vl": "Qwen3VLVisionModel", "qwen3_vl_moe": "Qwen3VLMoeVisionModel"}
_TOWER_CLASS = {"siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel", "clip": "CLIPVisionModel"}
_KIND = {"siglip": "text-aligned ViT (SigLIP image–text pretraining)", "siglip2": "text-aligned ViT (SigLIP2 image–text pretraining)",
         "clip": "text-aligned ViT (CLIP image–text pretraining)",
         "qwen3_vl": "vision tower of a vision-language model (Qwen3-VL)", "qwen3_vl_moe": "vision tower of a vision-language model (Qwen3-VL MoE)",
         "generic": "vision backbone (pretraining not known to avasr)"}


def hint(model: str) -> str:
    return (f"download it on a connected machine with `hf download {model}` and pass the local directory "
            "(--vision /path/to/dir), or set HF_HOME to a cache that holds it")


def available_offline(model: str) -> bool:
    """Whether a hub id's config is in the local Hugging Face cache (or ``model`` is a local directory)."""
    if os.path.isdir(model):
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # a malformed id or an unreadable cache
        return False


# --------------------------------------------------------------------------------------------- inspect
def _hub_commit(model: str, revision: str | None) -> tuple[str, bool]:
    """Find the hub config (cache first, then the Hub) → (commit hash it lives at, found in the cache)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    cached = True
    try:
        try:  # cached snapshots load without touching the network (and without retries when it is down)
            path = Path(hf_hub_download(model, "config.json", revision=revision, local_files_only=True))
        except LocalEntryNotFoundError:
            cached = False
            path = Path(hf_hub_download(model, "config.json", revision=revision))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        rev = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"vision model {model}{rev} is not in the local Hugging Face cache and the Hub cannot be "
                             "reached (offline)", hint(model)) from exc
    except Exception as exc:  # gated, unknown repo or revision, network errors
        rev = f" at revision {revision}" if revision else ""
        raise ModelLoadError(f"cannot load vision model {model}{rev}: {one_line(exc)}", hint(model)) from exc
    return (path.parent.name if path.parent.parent.name == "snapshots" else (revision or "")), cached


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
        with quiet():
            return AutoConfig.from_pretrained(model, revision=revision, **kwargs)
    except Exception as exc:
        why = ("pass --trust-remote-code if you trust this model's code" if "trust_remote_code" in str(exc)
               else hint(model))
        raise ModelLoadError(f"cannot read the config of vision model {model}: {one_line(exc)}", why) from exc


def inspect(spec: VisionSpec, *, revision: str | None = None, trust_remote_code: bool = False,
            layer: int = -1) -> tuple[EncoderInfo, Any]:
    """The identity of a model's features (no weights loaded) → (info, transformers config)."""
    rev = revision if revision is not None else spec.revision
    if spec.is_local:
        path = Path(spec.model).resolve()
        model_id, pinned, load_rev, cached, source = str(path), _fingerprint(path), None, True, f"local directory {path}"
    else:
        model_id = spec.model
        commit, cached = _hub_commit(model_id, rev)
        pinned = load_rev = commit or rev
        source = "Hugging Face hub " + ("cache" if cached else "(downloaded)")
    config = _load_config(model_id, load_rev, trust_remote_code)
    arch, vcfg = _arch_of(config)
    n = _num_layers(vcfg)
    if n is not None and not -(n + 1) <= layer <= n:
        raise ConfigError(f"layer {layer} is out of range for {model_id} ({n} layers: use -{n + 1}..{n}, -1 = last)",
                          "pick a layer inside the model, e.g. -1 (last) or -2 (penultimate)")
    has_head = arch == "clip" or (arch in ("siglip", "siglip2") and getattr(vcfg, "vision_use_head", True))
    pooling = "model" if layer == -1 and has_head else "masked-mean"
    untrained = spec.untrained or bool(getattr(config, "avasr_untrained", False))
    if untrained:
        kind, pretrained, aligned = "UNTRAINED: random weights, for pipeline tests only", False, False
    else:
        kind, pretrained, aligned = _KIND[arch], (None if arch == "generic" else True), (None if arch == "generic" else True)
    info = EncoderInfo(model_id, pinned, spec.label or model_id, arch, layer, pooling, untrained, family="hf",
                       pretrained=pretrained, text_aligned=aligned, kind=kind, weights_source=spec.source or source,
                       available_offline=cached)
    return info, config


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


# --------------------------------------------------------------------------------------------- backend
class Backend:
    """A loaded transformers tower: ``run(batch) -> (pooled, patches, grid)`` on a batch already on its device."""

    def __init__(self, info: EncoderInfo, model: Any, processor: Any, dtype: Any):
        self.info, self.model, self.dtype = info, model, dtype
        self.preprocessor = ImagePreprocessor(processor, _square_side(info.arch, processor))

    def run(self, batch: dict) -> tuple:
        want_hidden = self.info.layer != -1
        if self.info.arch.startswith("qwen3_vl"):
            out = self.model(batch["pixel_values"], grid_thw=batch["image_grid_thw"], output_hidden_states=want_hidden)
            return self._qwen(out, batch["image_grid_thw"])
        return self._tower(self.model(**batch, output_hidden_states=want_hidden), batch)

    def _tower(self, out: Any, batch: dict) -> tuple:
        hidden = out.last_hidden_state if self.info.layer == -1 else out.hidden_states[self.info.layer]
        t = hidden.shape[1]
        if self.info.arch == "siglip2":
            h, w = (int(x) for x in batch["spatial_shapes"][0])
            patches = hidden[:, : h * w]
        else:
            side = int(getattr(self.model.config, "image_size", 0)) // int(getattr(self.model.config, "patch_size", 1))
            h = w = side if side > 0 and side * side <= t else math.isqrt(t)
            patches = hidden[:, t - h * w :]  # drop CLS / register tokens in front
        pooled = out.pooler_output if self.info.pooling == "model" else patches.mean(dim=1)
        return pooled, patches, (h, w)

    def _qwen(self, out: Any, grid_thw: Any) -> tuple:
        t, gh, gw = (int(x) for x in grid_thw[0])
        b = grid_thw.shape[0]
        m = int(self.model.config.spatial_merge_size)
        if self.info.layer == -1:  # merged tokens (the language model's input space), raster over (gh/m, gw/m)
            patches = out.pooler_output.reshape(b, t * (gh // m) * (gw // m), -1)
            grid = (gh // m, gw // m)
        else:  # block outputs come in m×m window order: put them back in raster order
            hidden = out.hidden_states[self.info.layer].reshape(b, t, gh // m, gw // m, m, m, -1)
            patches = hidden.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t * gh * gw, -1)
            grid = (gh, gw)
        return patches.mean(dim=1), patches, grid


def load(info: EncoderInfo, config: Any, *, device: str, dtype: Any, trust_remote_code: bool = False) -> Backend:
    """The vision tower and image processor of an inspected model, on ``device``."""
    import torch
    import transformers
    from transformers import AutoImageProcessor

    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    load_rev = None if os.path.isdir(info.model_id) else info.revision
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        with quiet():
            processor = AutoImageProcessor.from_pretrained(info.model_id, revision=load_rev, **extra)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the image processor of {info.model_id}: {one_line(exc)}",
                             "save it next to the model (image_processor.save_pretrained(dir)) or " + hint(info.model_id)) from exc
    kwargs: dict = {"revision": load_rev, "dtype": dtype, "output_loading_info": True, **extra}
    try:
        with quiet():
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
        raise ModelLoadError(f"cannot load vision model {info.model_id}: {one_line(exc)}", hint(info.model_id)) from exc
    missing = [k for k in loading.get("missing_keys", ()) if "position_ids" not in k]
    if missing:
        raise ModelLoadError(f"{info.model_id}: {len(missing)} vision weights missing from the checkpoint (e.g. {sorted(missing)[0]})",
                             "check that the directory holds the full model weights (model.safetensors)")
    return Backend(info, model.to(device).eval(), processor, dtype)
