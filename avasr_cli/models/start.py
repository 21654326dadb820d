"""The encoder a stage starts from: what ``--init`` names (:func:`resolve_init`), and where the built-in
pretrained start point (``avasr pretrain`` on the built-in pool) lives and whether it is finished.

Shared by align, finetune and pretrain; importing it is cheap (no torch).
"""

from __future__ import annotations

import json
from pathlib import Path

from avasr_cli.errors import ConfigError, PrerequisiteError
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, avasr_home


def builtin_dir(lang: str) -> Path:
    from avasr_cli.data.builtin import ALIASES

    return avasr_home() / "pretrained" / f"builtin-ssl-{ALIASES.get(lang, lang)}"


def finished(directory: Path) -> dict | None:
    """The record of a finished pretraining in ``directory`` (None when absent or unfinished)."""
    try:
        record = json.loads((directory / "pretrain.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if (directory / "encoder" / "encoder.json").is_file() else None


def resolve_init(run: RunDir, init: str, rep: Reporter | None = None) -> str:
    """``auto`` on the built-in corpus: the built-in pretrained start point (``avasr pretrain``) when this
    machine has built it, else a randomly initialised ``tiny`` encoder (with a warning). ``builtin-ssl``
    names the start point explicitly. Other corpora need an explicit ``--init``."""
    prepare = (run.stage("prepare") or {}).get("config", {})
    if init == "builtin-ssl":
        directory = builtin_dir(prepare.get("lang", "kannada"))
        if finished(directory) is None:
            raise PrerequisiteError(f"--init builtin-ssl: the built-in pretrained encoder is not built on this machine "
                                    f"({directory})", f"run `avasr pretrain --lang {prepare.get('lang', 'kannada')}` first")
        return str(directory / "encoder")
    if init != "auto":
        return init
    if prepare.get("source", "builtin") == "builtin":
        directory = builtin_dir(prepare.get("lang", "kannada"))
        if finished(directory) is not None:
            return str(directory / "encoder")
        if rep is not None:
            rep.warn("no pretrained start point on this machine: starting from a RANDOM tiny encoder "
                     f"(run `avasr pretrain --lang {prepare.get('lang', 'kannada')}` once for the paper's setting)")
        return "tiny"
    raise ConfigError("--init is required for this corpus",
                      "pass a .nemo file or a NeMo pretrained name, e.g. --init nvidia/stt_kn_fastconformer_hybrid_large_pc")
