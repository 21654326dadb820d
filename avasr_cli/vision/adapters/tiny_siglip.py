"""The built-in UNTRAINED ``tiny-siglip``: a SigLIP tower with random weights, built once from a config with a
fixed seed and saved under ``$AVASR_HOME/models``; :mod:`avasr_cli.vision.adapters.hf` loads it like any
local directory. For fast pipeline tests only: its features carry no visual meaning.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from avasr_cli.vision.base import quiet

NAME = "tiny-siglip"
DIRNAME = "tiny-siglip-untrained"
VERSION = "v1-seed0"  # bump when the recipe in ensure() changes
LABEL = "tiny-siglip (UNTRAINED: random weights, for pipeline tests only)"

_README = """# tiny-siglip (UNTRAINED)

A SigLIP-architecture vision tower with RANDOM weights (hidden 64, 2 layers, patch 16, 96 px),
built by avasr from a transformers config with a fixed seed because hub weights cannot be
fetched on this machine. Its features carry no visual meaning: use it to test the pipeline only.
Recipe version: {version}.
"""


def directory() -> Path:
    from avasr_cli.run import avasr_home

    return avasr_home() / "models" / DIRNAME


def ensure() -> Path:
    """Build the untrained tiny SigLIP (model + image processor) once; later calls return its directory."""
    dest = directory()
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
                                    image_size=96, patch_size=16, avasr_untrained=True, avasr_recipe=VERSION)
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)
            model = SiglipVisionModel(config).eval()
        finally:
            torch.random.set_rng_state(state)
        with quiet():
            model.save_pretrained(tmp)
            SiglipImageProcessorPil(size={"height": 96, "width": 96}).save_pretrained(tmp)
        (tmp / "README.md").write_text(_README.format(version=VERSION))
        (tmp / "avasr_tiny.json").write_text(json.dumps({"untrained": True, "recipe": VERSION}) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not marker.is_file():  # a half-built leftover: replace it
                shutil.rmtree(dest, ignore_errors=True)
                os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
