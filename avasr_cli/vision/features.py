"""A run's image features as ``align`` reads them: ``features.json`` (which store, which model, its
dimension) checked against the store, every image of the alignment pool present, damaged or lost
shards named."""

from __future__ import annotations

import json

from avasr_cli.errors import ConfigError, InputError, PrerequisiteError
from avasr_cli.run import RunDir


def load_features(run: RunDir, cfg, rows: list[dict]) -> tuple[dict[str, int], dict]:
    """Check the run's feature store covers ``rows`` → (image sha → int id, features.json)."""
    from avasr_cli.vision.store import FeatureStore

    path = run.root / "features.json"
    if not path.exists() or run.stage("embed-images") is None:
        raise PrerequisiteError(f"run directory {run.root} has no image features",
                                "run `avasr embed-images" + (f" --vision {cfg.vision}" if cfg.vision != "auto" else "") + "` first")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        int(info.get("dim", 0))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path} is not a valid features record ({exc})",
                         "rerun `avasr embed-images --force` to rewrite it") from None
    if cfg.vision != "auto" and cfg.vision not in (info.get("vision"), info.get("model_id")):
        raise ConfigError(f"--vision {cfg.vision}: this run's features were made with {info.get('vision') or info.get('model_id')}",
                          f"run `avasr embed-images --vision {cfg.vision}` (use --force to replace them) or drop --vision")
    if not isinstance(info, dict) or not isinstance(info.get("store"), str):
        raise InputError(f"{path} names no feature store", "rerun `avasr embed-images --force` to rewrite it")
    store = FeatureStore.open(info["store"])
    keys = sorted({r["image_sha256"] for r in rows})
    missing = store.missing(keys)
    if missing:
        raise InputError(f"{len(missing)} image(s) of the alignment set have no features in {info['store']}"
                         + _lost_shards(store, info), "rerun `avasr embed-images`: it re-embeds only what is missing "
                         "(and removes damaged shards first)")
    if store.dim != int(info.get("dim", store.dim)):
        raise InputError(f"{path} says features have dimension {info.get('dim')}, but the store {info['store']} "
                         f"holds dimension {store.dim}", "rerun `avasr embed-images --force` to rewrite features.json")
    return {k: i for i, k in enumerate(keys)}, info


def _lost_shards(store, info: dict) -> str:
    """``: shard-00003 is damaged (…)`` / ``: shard-00007 (1024 of them) is gone``, from the store's own
    checks and the shards that ``features.json`` says held this run's images."""
    from pathlib import Path

    named = [f"{Path(shard).name} is damaged ({why})" for shard, why in sorted(store.damaged.items())]
    shards = info.get("shards") if isinstance(info.get("shards"), dict) else {}
    for name, count in shards.items():
        if not (Path(store.path) / name).is_dir():
            named.append(f"{name} ({count} of them) is gone")
    return (": " + "; ".join(named[:3]) + (f"; {len(named) - 3} more" if len(named) > 3 else "")) if named else ""
