"""A finished stage is skipped only while what it consumed is unchanged: rerunning `finetune` with the same
options after its data or its starting encoder changed (another run's aligned encoder redone, `--init auto`
now meaning the pretrained start point) trains again instead of reporting the old model as finished."""

from avasr_cli.cli.common import run_stage
from avasr_cli.data.manifest import read_manifest
from avasr_cli.run import write_jsonl_atomic
from avasr_cli.stages.align import AlignConfig, align_inputs, run_align
from avasr_cli.stages.finetune import FinetuneConfig, finetune_inputs, run_finetune
from avasr_cli.models.start import builtin_dir
from avasr_cli.stages.pretrain import PretrainConfig, run_pretrain

FT = FinetuneConfig(decoder="ctc", max_steps=2, batch_size=6, val_every=2, workers=0, warmup_steps=1)
AL = AlignConfig(objective="audio-only", max_steps=2, batch_size=6, workers=0, warmup_steps=1)


def test_finetune_reruns_when_its_data_changed(run):
    first = run_stage("finetune", run.root, FT, run_finetune, inputs=finetune_inputs)
    again = run_stage("finetune", run.root, FT, run_finetune, inputs=finetune_inputs)
    assert again == first  # skipped: same options, same inputs
    rows = read_manifest(run.manifest("train"))
    write_jsonl_atomic(run.manifest("train"), rows[:-3])
    third = run_stage("finetune", run.root, FT, run_finetune, inputs=finetune_inputs)
    assert third["train_utterances"] == first["train_utterances"] - 3
    assert third["inputs"]["train manifest"] != first["inputs"]["train manifest"]


def test_finetune_from_another_run_reruns_when_that_encoder_was_redone(run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run.root, other)
    run_stage("align", other, AL, run_align, inputs=align_inputs)
    cfg = FinetuneConfig(**{**FT.__dict__, "init": str(other / "align" / "encoder")})
    first = run_stage("finetune", run.root, cfg, run_finetune, inputs=finetune_inputs)
    run_stage("align", other, AlignConfig(**{**AL.__dict__, "lr": 5e-4}), run_align, inputs=align_inputs)
    second = run_stage("finetune", run.root, cfg, run_finetune, inputs=finetune_inputs)
    assert second["encoder_sha256"] != first["encoder_sha256"]


def test_init_auto_after_pretrain_is_another_start(run):
    first = run_stage("finetune", run.root, FT, run_finetune, inputs=finetune_inputs)
    assert first["init"].startswith("tiny")
    try:
        run_pretrain(PretrainConfig(num_clips=32, max_steps=2, batch_size=8, warmup_steps=1, workers=0))
        second = run_stage("finetune", run.root, FT, run_finetune, inputs=finetune_inputs)
        assert second["init"].startswith("builtin-ssl-kannada")
    finally:
        shutil_rm(builtin_dir("kannada"))


def shutil_rm(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)
