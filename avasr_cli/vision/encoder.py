"""The one loading path every caller uses: a name → its adapter → a :class:`VisionEncoder`.

:func:`inspect_vision_model` resolves a name through the registry and asks the family's adapter for the
identity of its features (no weights loaded: the feature-store key is known before a model is); then
:func:`load_inspected` loads it. A :class:`VisionEncoder` moves batches to the device, runs the adapter's
backend under ``inference_mode`` and returns ``(pooled [B, D], patches [B, P, D])`` as float32 CPU tensors.
torch is imported inside functions.
"""

from __future__ import annotations

from typing import Any

from avasr_cli.errors import ModelLoadError
from avasr_cli.vision.adapters import efficientnet, hf
from avasr_cli.vision.adapters.hf import _load_config  # noqa: F401  (tests/e2e/test_bad_input.py patches it here)
from avasr_cli.vision.base import EncoderInfo, VisionSpec, pool_patches, resolve_device  # noqa: F401  (public names)
from avasr_cli.vision.registry import resolve

ADAPTERS = {"hf": hf, "efficientnet": efficientnet}


class VisionEncoder:
    """A loaded encoder: ``embed(images) -> (pooled [B, D], patches [B, P, D])`` as float32 CPU tensors."""

    def __init__(self, info: EncoderInfo, backend: Any, device: Any):
        self.info, self.backend, self.device = info, backend, device
        self.model, self.dtype, self.preprocessor = backend.model, backend.dtype, backend.preprocessor
        self.model_id, self.revision, self.label = info.model_id, info.revision, info.label
        self.layer, self.pooling, self.arch, self.untrained = info.layer, info.pooling, info.arch, info.untrained
        from PIL import Image

        pooled, patches = self.embed([Image.new("RGB", (64, 64), (128, 128, 128))])  # probe the shapes
        self.dim = int(patches.shape[-1])
        self.num_patches = int(patches.shape[1])
        if pooled.shape[-1] != self.dim:
            raise ModelLoadError(f"{self.model_id}: pooled dim {pooled.shape[-1]} differs from patch dim {self.dim}",
                                 "use --layer -1 or a model whose pooled output matches its tokens")

    def embed(self, images: list) -> tuple:
        return self.forward(self.preprocessor(images))

    def forward(self, batch: dict) -> tuple:
        """Model inputs from :attr:`preprocessor` → (pooled, patches), float32 on the CPU; sets :attr:`grid`."""
        import torch

        batch = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                 for k, v in batch.items() if hasattr(v, "to")}
        with torch.inference_mode():
            pooled, patches, self.grid = self.backend.run(batch)
        return pooled.float().cpu(), patches.float().cpu()


def inspect_vision_model(spec_or_name: VisionSpec | str, *, revision: str | None = None,
                         trust_remote_code: bool = False, layer: int = -1) -> tuple[EncoderInfo, Any]:
    """Resolve a model to the identity of its features (no weights loaded) → (info, adapter state)."""
    spec = resolve(spec_or_name, revision) if isinstance(spec_or_name, str) else spec_or_name
    return ADAPTERS[spec.family].inspect(spec, revision=revision, trust_remote_code=trust_remote_code, layer=layer)


def load_inspected(info: EncoderInfo, config: Any, *, device: str = "cpu", dtype: Any = None,
                   trust_remote_code: bool = False) -> VisionEncoder:
    """Second half of :func:`load_vision_encoder`, for callers that inspected the model already."""
    import torch

    device = resolve_device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    backend = ADAPTERS[info.family].load(info, config, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    return VisionEncoder(info, backend, device)


def load_vision_encoder(spec_or_name: VisionSpec | str, *, revision: str | None = None, device: str = "cpu",
                        dtype: Any = None, trust_remote_code: bool = False, layer: int = -1) -> VisionEncoder:
    """Load a registry name, hub id or local directory, ready to embed."""
    info, state = inspect_vision_model(spec_or_name, revision=revision, trust_remote_code=trust_remote_code, layer=layer)
    return load_inspected(info, state, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
