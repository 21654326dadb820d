"""The AVASR_FAULT testing hook in the Reporter: a kill at exactly the named point, nothing when unset."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from avasr_cli.errors import ConfigError
from avasr_cli.progress import Reporter

SCRIPT = """
from avasr_cli.progress import Reporter
with Reporter().task("work (tiny)", total=10) as task:
    for i in range(1, 11):
        task.advance(1)
        print(i, flush=True)
with Reporter().task("other", total=3) as task:
    task.advance(3)
print("done", flush=True)
"""


def _run(fault):
    env = dict(os.environ, AVASR_FAULT=fault)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def test_kill_lands_right_after_the_named_advance():
    proc = _run("kill:work:4")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["1", "2", "3"]  # killed inside the 4th advance, before its print


def test_other_tasks_are_not_killed():
    proc = _run("kill:nothing like it:1")
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "done"


def test_unset_hook_hands_back_the_task_itself(monkeypatch):
    monkeypatch.delenv("AVASR_FAULT", raising=False)
    sentinel = object()

    class Plain(Reporter):
        @contextlib.contextmanager
        def _open(self, description, total, unit):
            yield sentinel

    with Plain().task("work") as task:
        assert task is sentinel  # no wrapper: no cost per advance


def test_malformed_hook_is_a_config_error(monkeypatch):
    monkeypatch.setenv("AVASR_FAULT", "kill:work")
    with pytest.raises(ConfigError, match="AVASR_FAULT"):
        with Reporter().task("work"):
            pass
