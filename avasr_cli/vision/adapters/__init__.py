"""One small module per encoder family; each knows how to load its models and nothing of the registry.

Every adapter module offers::

    inspect(spec, *, revision, trust_remote_code, layer) -> (EncoderInfo, state)   # no weights loaded
    load(info, state, *, device, dtype, trust_remote_code) -> backend
    available_offline(model) -> bool                                                  # no network, no torch

and a backend has ``model``, ``preprocessor`` (picklable: PIL images → input tensors, runs in DataLoader
workers), ``dtype`` and ``run(batch) -> (pooled [B, D], patches [B, P, D], grid (h, w))`` for a batch
already on the model's device. :mod:`avasr_cli.vision.encoder` wraps a backend into a ``VisionEncoder``.
"""
