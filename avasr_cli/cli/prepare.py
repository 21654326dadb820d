"""``avasr prepare``: the Typer layer over :func:`avasr_cli.stages.prepare.run_prepare`."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from avasr_cli.cli.common import ForceOption, JsonOption, RunDirOption, run_stage
from avasr_cli.data.vaani.plan import LARGE_PHASE_HOURS

BUILTIN, VAANI, BYO = "Built-in corpus (--source builtin)", "Vaani (--source vaani)", "Your manifests (--source manifest)"


def _opt(default, *names: str, panel: str | None = None, **kw):
    return typer.Option(default, *names, rich_help_panel=panel, show_default=default not in (None, ""), **kw)


def _summary(result: dict) -> str:
    lines = [f"prepared {result['lang']} ({result['source']}) from {result['corpus_dir']}"
             + (" [cached]" if result.get("reused_cache") else "")]
    unknown = result.get("unknown_speaker_rows") or {}
    for split, n in result["counts"].items():
        extra = f", {unknown[split]} utts of unknown speaker" if unknown.get(split) else ""
        lines.append(f"  {split:<6} {n:>7} utts  {result['hours'][split]:7.3f} h  "
                     f"{result['speakers'][split]:>4} speakers{extra}  {result['manifests'][split]}")
    lines.append(f"data card: {result['data_card']}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare(
        lang: str = _opt("kannada", "--lang", help="Language: kannada or hindi (builtin); any Vaani language name."),
        source: str = _opt("builtin", "--source", help="builtin (offline: procedural images + synthetic speech), "
                           "vaani (gated hub data, needs a token) or manifest (your NeMo manifests)."),
        seed: int = _opt(0, "--seed", help="Seed of the corpus (builtin) or of carved dev/test speakers (vaani)."),
        num_align: int = _opt(800, "--num-align", panel=BUILTIN, help="Untranscribed audio-image pairs."),
        num_train: int = _opt(300, "--num-train", panel=BUILTIN, help="Transcribed training utterances."),
        num_dev: int = _opt(80, "--num-dev", panel=BUILTIN, help="Dev utterances (unseen voices, unseen sentences)."),
        num_test: int = _opt(160, "--num-test", panel=BUILTIN, help="Test utterances (unseen voices, unseen sentences)."),
        dataset: str = _opt("ARTPARK-IISc/Vaani", "--dataset", panel=VAANI,
                            help="Audio + images: hub id (id@rev pins it) or a local `hf download` folder."),
        transcribed: str = _opt("ARTPARK-IISc/Vaani-transcription-part", "--transcribed-dataset", panel=VAANI,
                                help="Transcribed train/validation/test: hub id or local folder."),
        revision: Optional[str] = _opt(None, "--revision", panel=VAANI, help="Hub revision (branch, tag, commit)."),
        districts: str = _opt("", "--districts", panel=VAANI, help="Comma-separated districts to keep, each District "
                              "or State/District (default all of the language)."),
        max_align_hours: Optional[float] = _opt(None, "--max-align-hours", panel=VAANI, help="Cap on alignment hours."),
        max_train_hours: Optional[float] = _opt(None, "--max-train-hours", panel=VAANI, help="Cap on training hours."),
        all_: bool = _opt(False, "--all", panel=VAANI, help=f"Decode a training or alignment set above "
                          f"{LARGE_PHASE_HOURS:.0f} h without a cap (otherwise prepare stops after printing the plan)."),
        token: Optional[str] = _opt(None, "--token", panel=VAANI, help="Hugging Face token (default: HF_TOKEN or "
                                    "`hf auth login`). Never written anywhere."),
        max_duration: float = _opt(20.0, "--max-duration", panel=VAANI, help="Drop longer clips (s; vaani, manifest)."),
        workers: int = _opt(2, "--workers", panel=VAANI, help="Decoding processes (vaani, manifest)."),
        audio_layout: str = _opt("files", "--audio-layout", help="files: one audio file per clip. shards: NeMo "
                                 "tarred audio (audio_<i>.tar + manifest_<i>.json), streamed by finetune with "
                                 "duration bucketing; for large corpora on shared file systems."),
        shard_clips: int = _opt(1000, "--shard-clips", help="Clips per audio shard (with --audio-layout shards)."),
        train: str = _opt("", "--train", panel=BYO, help="Train manifest (audio_filepath, duration, text)."),
        dev: str = _opt("", "--dev", panel=BYO, help="Dev manifest (speakers unseen in train/align)."),
        test: str = _opt("", "--test", panel=BYO, help="Test manifest (speakers unseen in train/align)."),
        align: str = _opt("", "--align", panel=BYO, help="Audio-image pairs (audio_filepath, duration, image_filepath)."),
        run_dir: RunDirOption = None,
        force: ForceOption = False,
        as_json: JsonOption = False,
    ) -> None:
        """Write the align/train/dev/test manifests and a data card into the run directory.

        Decoded corpora are cached in $AVASR_HOME/corpora and shared by run directories asking for the same
        language, sources and seed; an interrupted vaani prepare resumes where it stopped. Dev and test
        speakers never occur in train or align. builtin is the default because it needs no network or account.

        Examples:

        \b
            avasr prepare --lang kannada
            avasr -r runs/direct prepare --lang hindi --seed 1
            avasr prepare --source vaani --lang kannada --max-align-hours 100 --max-train-hours 50
            avasr prepare --source vaani --lang hindi --all --audio-layout shards
            avasr prepare --source vaani --lang hindi --districts Bihar/Aurangabad,Patna --all
            avasr prepare --source vaani --lang kannada --dataset ~/vaani --transcribed-dataset ~/vaani-tr
            avasr prepare --source manifest --train tr.jsonl --dev dev.jsonl --test test.jsonl --align pairs.jsonl
        """
        import functools

        from avasr_cli.stages.prepare import PrepareConfig, run_prepare

        if token:  # keep it out of run.json's command line and the lock file
            sys.argv = [a.replace(token, "***") for a in sys.argv]
        cfg = PrepareConfig(lang=lang, source=source, seed=seed, num_align=num_align, num_train=num_train,
                            num_dev=num_dev, num_test=num_test, dataset=dataset, transcribed_dataset=transcribed,
                            revision=revision, districts=tuple(districts.split(",")), max_align_hours=max_align_hours,
                            max_train_hours=max_train_hours, all=all_, max_duration=max_duration, workers=workers,
                            train=train, dev=dev, test=test, align=align, audio_layout=audio_layout,
                            shard_clips=shard_clips).validate()
        _keep_no_empty_run_dir(run_dir, lambda: run_stage(
            "prepare", run_dir, cfg, functools.partial(run_prepare, token=token, verify=force), force=force, as_json=as_json,
            summary=_summary))


def _keep_no_empty_run_dir(run_dir, fn) -> None:
    """A prepare refused before writing anything (a gated dataset, a refused plan) leaves no new, empty run
    directory behind (the run-directory lock creates it)."""
    from avasr_cli.run import resolve_run_dir

    root = resolve_run_dir(run_dir).root
    existed = root.exists()
    try:
        fn()
    except BaseException:
        if not existed and root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        raise
