"""Shared fixtures: every test runs offline with its own AVASR_HOME cache."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    if "AVASR_TEST_SHARED_HOME" not in os.environ:
        monkeypatch.setenv("AVASR_HOME", str(tmp_path_factory.mktemp("avasr_home")))
    monkeypatch.delenv("AVASR_RUN_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
