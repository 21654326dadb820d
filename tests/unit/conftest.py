"""Fixtures shared by the unit tests that train real NeMo models on a tiny built-in corpus."""

import pytest

from avasr_cli.run import RunDir


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """One prepared + embedded run directory, copied per test (the corpus lives in a module-wide cache)."""

    from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:  # a session fixture: no function-scoped monkeypatch
        mp.setenv("AVASR_HOME", str(home))
        base = RunDir(tmp_path_factory.mktemp("base"))
        cfg = PrepareConfig(num_align=30, num_train=18, num_dev=6, num_test=6)
        run_prepare(base, cfg, None)
        base.record_stage("prepare", cfg, {})
        ecfg = EmbedConfig(vision="tiny-siglip", workers=0)  # fast; the offline default is tested elsewhere
        run_embed_images(base, ecfg, None)
        base.record_stage("embed-images", ecfg, {})
    return base.root, home


@pytest.fixture
def run(prepared, tmp_path, monkeypatch):
    import shutil

    src, home = prepared
    monkeypatch.setenv("AVASR_HOME", str(home))
    shutil.copytree(src, tmp_path / "run")
    return RunDir(tmp_path / "run")
