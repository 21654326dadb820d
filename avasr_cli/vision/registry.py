"""Vision encoder registry: short names → documented hub ids, plus the built-in UNTRAINED ``tiny-siglip``.

:func:`resolve` turns what a user typed after ``--vision`` (a registry name, a hub id ``owner/name`` or a
local directory) into a :class:`VisionSpec`. Nothing here imports torch or transformers except
:func:`ensure_tiny_siglip`, which builds the tiny model on first use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from avasr_cli.errors import ConfigError

TINY_SIGLIP = "tiny-siglip"
TINY_SIGLIP_DIRNAME = "tiny-siglip-untrained"
TINY_SIGLIP_VERSION = "v1-seed0"  # bump when the recipe in ensure_tiny_siglip changes
UNTRAINED_LABEL = "tiny-siglip (UNTRAINED: random weights, for pipeline tests only)"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """What to load: a hub id or a local directory, an optional revision, and a human label."""

    model: str  # hub id (owner/name) or absolute path of a local directory
    revision: str | None = None
    label: str = ""
    untrained: bool = False

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.model)


# name -> (hub id, label); hub ids are the documented checkpoints, pinned with --revision if needed
REGISTRY: dict[str, tuple[str, str]] = {
    "siglip2": ("google/siglip2-base-patch16-224", "SigLIP2 ViT-B/16, 224 px"),
    "siglip2-so400m": ("google/siglip2-so400m-patch14-384", "SigLIP2 So400m/14, 384 px"),
    "clip": ("openai/clip-vit-base-patch32", "CLIP ViT-B/32, 224 px"),
    "clip-large": ("openai/clip-vit-large-patch14", "CLIP ViT-L/14, 224 px"),
    "qwen3vl": ("Qwen/Qwen3-VL-2B-Instruct", "Qwen3-VL 2B vision tower (language model not loaded)"),
    TINY_SIGLIP: ("(built locally)", UNTRAINED_LABEL),
}


def registry_rows() -> list[dict]:
    """The registry as rows for ``avasr embed-images --list``."""
    rows = []
    for name, (model, label) in REGISTRY.items():
        if name == TINY_SIGLIP:
            model = str(tiny_siglip_dir())
        rows.append({"name": name, "model": model, "label": label})
    return rows


def is_known(name: str) -> bool:
    """Whether :func:`resolve` would accept ``name`` (checked without building or loading anything)."""
    name = (name or "").strip()
    return name in REGISTRY or (bool(name) and Path(name).expanduser().is_dir()) or bool(_HUB_ID.match(name))


def resolve(name: str, revision: str | None = None) -> VisionSpec:
    """Registry name, hub id or local directory → :class:`VisionSpec` (``revision`` overrides the default)."""
    name = (name or "").strip()
    if name == TINY_SIGLIP:
        path = ensure_tiny_siglip()
        return VisionSpec(str(path), revision=None, label=UNTRAINED_LABEL, untrained=True)
    if name in REGISTRY:
        model, label = REGISTRY[name]
        return VisionSpec(model, revision=revision, label=f"{name}: {label} ({model})")
    local = Path(name).expanduser()
    if name and local.is_dir():
        local = local.resolve()
        untrained = _is_untrained(local)
        return VisionSpec(str(local), revision=None, label=f"local {local}" + (" (UNTRAINED)" if untrained else ""),
                          untrained=untrained)
    if _HUB_ID.match(name):
        return VisionSpec(name, revision=revision, label=name)
    raise ConfigError(
        f"unknown vision encoder {name!r}: not a registry name ({', '.join(REGISTRY)}), "
        "a hub id (owner/name) or an existing directory",
        "run `avasr embed-images --list` to see the registry, or pass a local model directory",
    )


def _is_untrained(path: Path) -> bool:
    try:
        return bool(json.loads((path / "config.json").read_text()).get("avasr_untrained", False))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------- tiny-siglip
def tiny_siglip_dir() -> Path:
    from avasr_cli.run import avasr_home

    return avasr_home() / "models" / TINY_SIGLIP_DIRNAME


_README = """# tiny-siglip (UNTRAINED)

A SigLIP-architecture vision tower with RANDOM weights (hidden 64, 2 layers, patch 16, 96 px),
built by avasr from a transformers config with a fixed seed because hub weights cannot be
fetched on this machine. Its features carry no visual meaning: use it to test the pipeline only.
Recipe version: {version}.
"""


def ensure_tiny_siglip() -> Path:
    """Build the untrained tiny SigLIP (model + image processor) once; later calls return its directory."""
    dest = tiny_siglip_dir()
    marker = dest / "avasr_tiny.json"
    if marker.is_file():
        return dest
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        config = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=96, patch_size=16, avasr_untrained=True,
                                    avasr_recipe=TINY_SIGLIP_VERSION)
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)
            model = SiglipVisionModel(config).eval()
        finally:
            torch.random.set_rng_state(state)
        from avasr_cli.vision.encoder import _quiet

        with _quiet():
            model.save_pretrained(tmp)
            SiglipImageProcessorPil(size={"height": 96, "width": 96}).save_pretrained(tmp)
        (tmp / "README.md").write_text(_README.format(version=TINY_SIGLIP_VERSION))
        (tmp / "avasr_tiny.json").write_text(json.dumps({"untrained": True, "recipe": TINY_SIGLIP_VERSION}) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not marker.is_file():  # a half-built leftover: replace it
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
