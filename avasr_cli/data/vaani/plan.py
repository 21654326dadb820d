"""The plan of a Vaani prepare, made before anything is decoded: rows, hours and disk per phase, a free-space
check, and a refusal to decode a very large phase nobody asked for.

Sizes
    Local snapshots: rows from the parquet metadata; hours from the ``duration`` column when the files have
    one, else from the size of the WAV bytes (16 kHz 16-bit mono is 32,000 bytes a second). Hub ids: hours
    from the size of the config's parquet files in the repository listing (an upper bound: parquet holds
    the other columns too), rows unknown. With ``--districts`` the district configs, which hold the same
    clips as the language config, give the size when they exist; otherwise the size is that of every
    config read and the rows kept are fewer (the plan says "at most").

Large jobs
    A training or alignment phase of more than :data:`LARGE_PHASE_HOURS` hours (or of unknown size) is
    decoded only with its cap (``--max-train-hours`` / ``--max-align-hours``) or with ``--all``. Dev and
    test are the official splits and are never capped.

Disk
    The estimate is the WAV size of the planned audio (FLAC, what is written, is smaller) plus the planned
    alignment rows' share of the images config; what the cache already holds is subtracted before the
    estimate is compared with the free space of ``$AVASR_HOME``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from avasr_cli.data.vaani.hub import WAV_BYTES_PER_SECOND, VaaniDataset
from avasr_cli.data.vaani.select import SPLIT_NAMES, norm
from avasr_cli.errors import ConfigError, ResourceError
from avasr_cli.progress import Reporter

LARGE_PHASE_HOURS = 500.0
PHASES = ("dev", "test", "train", "align")
CAPS = {"train": "max_train_hours", "align": "max_align_hours"}
NAMES = {"dev": "dev", "test": "test", "train": "training", "align": "alignment"}


def _local_size(ds: VaaniDataset, rel: str) -> tuple[int, float]:
    pf = ds.parquet(rel)
    meta = pf.metadata
    if "duration" in pf.schema_arrow.names:
        import pyarrow.compute as pc

        seconds = pc.sum(pf.read(columns=["duration"]).column(0)).as_py()
        if seconds is not None:
            return meta.num_rows, float(seconds)
    audio = sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
                for c in range(meta.num_columns) if meta.row_group(g).column(c).path_in_schema == "audio.bytes")
    return meta.num_rows, audio / WAV_BYTES_PER_SECOND


def measure(ds: VaaniDataset, configs: list[str]) -> dict[str, dict]:
    """{split as a phase name: {rows, hours}} over ``configs`` (``rows``/``hours`` None when unknown)."""
    out: dict[str, dict] = {}
    for config in configs:
        for split, files in ds.files(config).items():
            if ds.local:
                sized = [_local_size(ds, rel) for rel in files]
                rows, hours = sum(r for r, _ in sized), sum(s for _, s in sized) / 3600
            else:
                size = ds.file_bytes(config, split)
                rows, hours = None, None if size is None else size / WAV_BYTES_PER_SECOND / 3600
            out = _add(out, SPLIT_NAMES.get(norm(split), "train"), rows, hours)
    return out or {"train": {"rows": None, "hours": None}}


def _add(out: dict, phase: str, rows, hours) -> dict:
    old = out.get(phase, {"rows": 0, "hours": 0.0})
    out[phase] = {"rows": None if rows is None or old["rows"] is None else old["rows"] + rows,
                  "hours": None if hours is None or old["hours"] is None else old["hours"] + hours}
    return out


def image_bytes(ds: VaaniDataset, configs: list[str]) -> int:
    return sum(ds.file_bytes(c, s) or 0 for c in configs for s in ds.files(c))


def _free_bytes(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def make_plan(layout: dict, cfg, root: Path, rep: Reporter) -> dict:
    """Print the plan of decoding ``layout`` (from :func:`avasr_cli.data.vaani._layout`) into ``root``, then
    refuse an uncapped large phase (:class:`ConfigError`) or a disk too small (:class:`ResourceError`);
    return the plan for the data card."""
    sizes, phases, problems = layout["sizes"], {}, []
    align: dict = {}
    for v in sizes["audio"].values():  # every split of the main dataset is alignment audio
        align = _add(align, "align", v["rows"], v["hours"])
    for phase in PHASES:
        part = "audio" if phase == "align" else "transcribed"
        found = align["align"] if phase == "align" else sizes["transcribed"].get(phase, {"rows": 0, "hours": 0.0})
        cap = getattr(cfg, CAPS[phase]) if phase in CAPS else None
        hours = found["hours"]
        planned = min(cap, hours) if cap is not None and hours is not None else (cap if hours is None else hours)
        phases[phase] = dict(rows=found["rows"], hours=hours, cap_hours=cap, planned_hours=planned,
                             exact=sizes["exact"][part])
        if phase in CAPS and cap is None and not cfg.all and (hours is None or hours > LARGE_PHASE_HOURS):
            size = "of unknown size" if hours is None else f"~{hours:,.0f} h"
            problems.append(f"the {NAMES[phase]} set ({', '.join(layout[part]['configs'])}, {size})")
    audio_seconds = sum((p["planned_hours"] or 0) for p in phases.values()) * 3600
    align = phases["align"]
    share = 1.0 if not align["hours"] else min(1.0, (align["planned_hours"] or 0) / align["hours"])
    estimate = int(audio_seconds * WAV_BYTES_PER_SECOND + sizes["image_bytes"] * share)
    need = max(0, estimate - _tree_bytes(root))
    free = _free_bytes(root)
    plan = dict(phases=phases, estimated_disk_bytes=estimate, free_bytes=free, cache=str(root.parent),
                large_phase_hours=LARGE_PHASE_HOURS)
    _print(plan, cfg, layout, rep)
    if problems:
        raise ConfigError(f"Vaani {cfg.lang}: {' and '.join(problems)} exceed the {LARGE_PHASE_HOURS:.0f} h that "
                          "prepare decodes without being asked",
                          f"cap them with --max-align-hours H / --max-train-hours H (e.g. 100), or pass --all to "
                          f"decode everything (estimated {estimate / 1e9:,.1f} GB)")
    if need > free:
        raise ResourceError(f"not enough disk space in {root.parent} for Vaani {cfg.lang}: estimated "
                            f"{need / 1e9:,.2f} GB more, {free / 1e9:,.2f} GB free",
                            "free some space, point AVASR_HOME at a larger disk, or lower --max-align-hours / "
                            "--max-train-hours")
    return plan


def _print(plan: dict, cfg, layout: dict, rep: Reporter) -> None:
    def read(part: str) -> str:
        filtered = cfg.districts or not layout[part]["by_language"]
        return ", ".join(layout[part]["configs"]) + (" (rows filtered)" if filtered else "")

    rep.log(f"Vaani {cfg.lang} plan: transcribed {read('transcribed')}; alignment {read('audio')}")
    for name, p in plan["phases"].items():
        bound = "" if p["exact"] else "≤ "
        rows = "? rows" if p["rows"] is None else f"{bound}{p['rows']:,} rows"
        hours = "? h" if p["hours"] is None else f"{bound}{p['hours']:,.2f} h"
        cap = f" → {p['planned_hours']:,.2f} h (cap)" if p["cap_hours"] is not None else ""
        rep.log(f"  {name:<6} {rows:>16}  {hours:>12}{cap}")
    rep.log(f"  estimated disk: {plan['estimated_disk_bytes'] / 1e9:,.2f} GB (WAV size, an upper bound), "
            f"{plan['free_bytes'] / 1e9:,.1f} GB free in {plan['cache']}")
