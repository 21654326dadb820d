"""Reading runs for ``avasr compare``: a run directory's run.json and reports, turned into the settings
compare shows, groups by and checks (:func:`run_info`), and runs grouped into rows (:func:`group_runs`).

Continued-pretraining budget
    ``avasr align`` records ``stages.align.result.budget`` (steps, batches, optimiser, schedule, starting
    encoder and its hash, align manifest hash, ...). Older run.json files lack it: the budget is then
    rebuilt from ``stages.align.config`` and the result fields they have, where their
    ``effective_batch`` meant samples per update (batch × accumulate × world); values they never recorded
    (schedule, hashes) stay ``None`` and are reported as not compared.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from avasr_cli.errors import InputError

DASH = "—"

# continued-pretraining settings that must match for runs to share a row (seeds and hashes aside)
ALIGN_SETTING_KEYS = ("max_steps", "effective_batch", "samples_per_update", "lr", "weight_decay", "warmup_steps",
                      "schedule", "init", "freeze_layers", "ssl", "head_lr", "layer_decay", "align_layer",
                      "train_pairs", "precision", "siglip_init_bias", "pairs")

# SigLIP's own initial bias, which every siglip run used before --siglip-bias (and did not record)
LEGACY_SIGLIP_BIAS = -10.0

# what must be equal for runs to share a row: everything shown except seeds and hashes
GROUP_KEYS = ("arm", "objective", "vision", "loss", *(f"align_{k}" for k in ALIGN_SETTING_KEYS), "init_setting",
              "decoder", "max_steps", "batch_size", "effective_batch", "lr", "head_lr", "layer_decay", "weight_decay",
              "schedule",
              "hours_setting", "lang", "source")


@dataclasses.dataclass
class Run:
    path: str
    name: str
    info: dict
    reports: dict[str, dict]
    align_result: dict | None = None  # run.json's align result (recall, loss, verdict), when it has one
    finished: tuple = ()  # when its stages finished


def get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def fmt(v: Any) -> str:
    return DASH if v is None or v == "" else str(v)


_SEED_IN_TEXT = re.compile(r"\bseed[\s=:]*\d+", re.IGNORECASE)


def same_setting(value: Any, root: Path) -> Any:
    """An init description as a setting: the run's own directory and any ``seed N`` inside it do not
    count (``tiny (seed 1, random init)`` of seed 1 and ``tiny (seed 2, …)`` of seed 2 are one setting)."""
    if not isinstance(value, str):
        return value
    return _SEED_IN_TEXT.sub("seed *", value.replace(str(root), "<run>"))


def _product(*values: Any) -> int | None:
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        return None
    out = 1
    for v in values:
        out *= v
    return out


def align_budget(ares: dict, acfg: dict, root: Path) -> dict:
    """The continued-pretraining budget of one run: the recorded ``budget``, or one rebuilt from an older
    record (see the module docstring). ``init`` is made a seed-free setting."""
    recorded = ares.get("budget")
    if isinstance(recorded, dict):
        budget = dict(recorded)
    else:
        batch = first(ares.get("batch_size"), acfg.get("batch_size"))
        world, accumulate = ares.get("world_size"), acfg.get("accumulate")
        per_update = first(ares.get("effective_batch"), _product(batch, accumulate, world))
        negatives = _product(batch, world)
        if negatives is None and isinstance(per_update, int) and isinstance(accumulate, int) and accumulate > 0:
            negatives = per_update // accumulate
        budget = {"objective": first(ares.get("objective"), acfg.get("objective")),
                  "max_steps": first(acfg.get("max_steps"), ares.get("steps")), "steps": ares.get("steps"),
                  "batch_size": batch, "accumulate": accumulate, "world_size": world, "effective_batch": negatives,
                  "samples_per_update": per_update, "lr": acfg.get("lr"), "weight_decay": acfg.get("weight_decay"),
                  "warmup_steps": acfg.get("warmup_steps"), "schedule": None,
                  "init": first(ares.get("init"), acfg.get("init")), "init_sha256": None, "manifest_sha256": None,
                  "freeze_layers": acfg.get("freeze_layers"), "seed": acfg.get("seed"), "ssl": None}
    budget["init"] = same_setting(budget.get("init"), root)
    loss = first(budget.get("loss"), ares.get("loss"), acfg.get("loss"))
    if budget.get("objective", acfg.get("objective")) == "image" and loss == "siglip" and "siglip_init_bias" not in budget:
        budget["siglip_init_bias"] = LEGACY_SIGLIP_BIAS  # recorded since --siglip-bias; -10 before
    return budget


def run_info(record: dict, root: Path) -> dict:
    """The settings compare shows and groups by, from run.json; stage results (resolved values) win over
    stage configs (what was asked, e.g. ``auto``)."""
    stages = record.get("stages") or {}
    prep = get(stages, "prepare", "config") or {}
    align = stages.get("align")
    acfg = get(align, "config") or {}
    ares = get(align, "result") or {}
    fcfg = get(stages, "finetune", "config") or {}
    fres = get(stages, "finetune", "result") or {}
    budget = fres.get("budget") or {}
    if align is None:  # fine-tuned from an encoder aligned in another run directory (--init DIR)
        earlier = [h for h in fres.get("encoder_history") or [] if isinstance(h, dict) and h.get("stage") == "align"]
        if earlier:
            align, ares = {"result": earlier[-1]}, earlier[-1]
    abudget = align_budget(ares, acfg, root) if align is not None else None
    objective = first(ares.get("objective"), acfg.get("objective")) if align is not None else None
    vision = first(ares.get("vision"), acfg.get("vision")) if objective != "audio-only" else None
    loss = first(ares.get("loss"), acfg.get("loss")) if objective != "audio-only" else None  # --loss: image only
    if align is None:
        arm = "direct"
    elif objective == "audio-only":
        arm = "audio-only"
    else:
        arm = f"align:{vision or DASH}/{loss or DASH}"
        layer, n_layers = (abudget or {}).get("align_layer"), (abudget or {}).get("encoder_layers")
        if isinstance(layer, int) and isinstance(n_layers, int) and layer != n_layers - 1:
            arm += f"@L{layer}"  # an intermediate conformer layer was aligned (--align-layer)
        if (abudget or {}).get("pairs") == "shuffled":
            arm += "+shuffled"  # the negative control: images permuted among the clips
    batch = first(budget.get("batch_size"), fcfg.get("batch_size"))
    hours = first(budget.get("train_hours"), fres.get("train_hours"))
    init = first(fres.get("init"), fcfg.get("init"), acfg.get("init"))
    info = {
        "arm": arm,
        "objective": objective,
        "vision": vision,
        "vision_untrained": bool(ares.get("vision_untrained")) if align is not None else False,
        "loss": loss,
        "align_budget": abudget,
        "init": init,
        "init_setting": same_setting(init, root),
        "decoder": first(budget.get("decoder"), fres.get("decoder"), fcfg.get("decoder")),
        "max_steps": first(budget.get("max_steps"), fcfg.get("max_steps")),
        "batch_size": batch,
        "effective_batch": first(budget.get("effective_batch"), batch),
        "lr": first(budget.get("lr"), fcfg.get("lr")),
        "head_lr": budget.get("head_lr"),
        "layer_decay": first(budget.get("layer_decay"), fcfg.get("layer_decay")),
        "weight_decay": first(budget.get("weight_decay"), fcfg.get("weight_decay")),
        "schedule": budget.get("schedule"),
        "train_hours": hours,
        # the amount asked for (0 = all): seeds subsample slightly different hours of the same amount
        "hours_setting": fcfg["train_hours"] if "train_hours" in fcfg else (round(float(hours), 2) if hours is not None else None),
        "seed": first(budget.get("seed"), fcfg.get("seed")),
        "tokenizer": fres.get("tokenizer_sha256"),
        "lang": prep.get("lang"),
        "source": prep.get("source"),
        # the stack the trained model came from: fine-tuning's (and the align stage's, when it differs)
        "environment": get(stages, "finetune", "environment"),
        "align_environment": get(align, "environment") if isinstance(align, dict) else None,
    }
    for k in ALIGN_SETTING_KEYS:
        info[f"align_{k}"] = abudget.get(k) if abudget is not None else None
    return info


def load_run(path: str) -> Run:
    from avasr_cli.run import RunDir

    p = Path(path)
    if not p.is_dir() or not (p / "run.json").is_file():
        what = "does not exist" if not p.exists() else ("is not a directory" if not p.is_dir() else "has no run.json")
        raise InputError(f"{path} {what}: not a run directory",
                         "pass run directories (each with a run.json), e.g. `avasr compare runs/*`")
    record = RunDir(p).load()
    reports: dict[str, dict] = {}
    for f in sorted((p / "reports").glob("wer-*.json")):
        try:
            rep = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"report {f} cannot be read ({exc})", f"avasr evaluate -r {path}") from exc
        if not isinstance(rep, dict):
            raise InputError(f"report {f} is not a JSON object", f"avasr evaluate -r {path}")
        reports[rep.get("split") or f.name[len("wer-"):-len(".json")]] = rep
    if not reports:
        raise InputError(f"run directory {path} has no reports (reports/wer-<split>.json)", f"avasr evaluate -r {path}")
    stages = record.get("stages") or {}
    if not isinstance(stages.get("evaluate"), dict):  # a stage before it was redone: its record went, its files stayed
        raise InputError(f"{path}: reports/ were left by an earlier evaluate, and run.json records no finished "
                         f"evaluate now (a stage before it was redone since): they describe a model or data this "
                         f"run no longer has", f"rerun the later stages: avasr -r {path} finetune, then evaluate")
    align = get(stages, "align", "result")
    return Run(path=str(path), name=p.resolve().name, info=run_info(record, p.resolve()), reports=reports,
               align_result=align if isinstance(align, dict) else None,
               finished=tuple(str(s.get("finished")) for s in stages.values() if isinstance(s, dict) and s.get("finished")))


def load_runs(paths: tuple[str, ...], notes: list[str]) -> list[Run]:
    """Each distinct run directory once (files among the arguments are skipped with a note)."""
    seen: set[Path] = set()
    keep = []
    for p in paths:
        if Path(p).is_file():  # `runs/*` also matches plots and notes kept beside the runs
            notes.append(f"skipped {p}: a file, not a run directory")
            continue
        if Path(p).resolve() not in seen:
            seen.add(Path(p).resolve())
            keep.append(p)
    if not keep:
        files = [p for p in paths if Path(p).is_file()]
        said = f" ({', '.join(map(str, files[:3]))}{' …' if len(files) > 3 else ''}: files, not run directories)" if files else ""
        raise InputError(f"no run directories among the arguments{said}",
                         "pass run directories, e.g. `avasr compare runs/*`")
    runs = [load_run(p) for p in keep]
    names = [r.name for r in runs]
    for r in runs:  # show the path where folder names collide
        if names.count(r.name) > 1:
            r.name = r.path
    return runs


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """Runs equal in every setting of :data:`GROUP_KEYS` (they differ only in seeds) form one row."""
    grouped: dict[str, list[Run]] = {}
    for r in runs:
        grouped.setdefault(json.dumps([r.info[k] for k in GROUP_KEYS], default=str, sort_keys=True), []).append(r)
    groups = list(grouped.values())
    for g in groups:
        g.sort(key=lambda r: (r.info["seed"] is None, str(r.info["seed"]), r.name))
        seeds = [r.info["seed"] for r in g if r.info["seed"] is not None]
        seed = next((x for x in seeds if seeds.count(x) > 1), None)
        if seed is not None:
            twins = [r.path for r in g if r.info["seed"] == seed]
            raise InputError(f"{' and '.join(twins)} are one arm with the same settings and seed {seed}: a repeat "
                             "of one training run, not another seed (averaged as seeds they would narrow the "
                             "interval falsely)", "compare one of them, or train the arm again with another --seed")
    return groups
