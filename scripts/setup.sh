#!/usr/bin/env bash
# Create the virtual environment and install avasr (with test extras) into it.
#
#   scripts/setup.sh [VENV_DIR]
#
# Without a GPU it installs a CPU build of torch first ($AVASR_TORCH_SPEC, default torch==2.13.0,
# which these machines serve from local disk; elsewhere add PyTorch's CPU index through
# PIP_EXTRA_INDEX_URL). With a GPU, pip resolves torch's default (CUDA) build through the
# `torch>=2.6` range in pyproject.toml. Everything else comes from requirements/lock.txt (exact versions
# with hashes, `pip install --require-hashes --no-deps`; made by `make lock`) on CPython 3.11 x86_64
# Linux, the machine it was locked for; elsewhere, or with AVASR_NO_LOCK=1, pip resolves the ranges in
# pyproject.toml. Reruns are cheap: nothing is reinstalled when neither file has changed.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.avasr-installed"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt requirements/lock.txt ]]; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: no GPU found, installing a CPU build of torch (${AVASR_TORCH_SPEC:-torch==2.13.0})" >&2
  "${pip[@]}" "${AVASR_TORCH_SPEC:-torch==2.13.0}"
else
  echo "setup: GPU found, installing torch with its CUDA dependencies (${AVASR_TORCH_SPEC:-torch>=2.6})" >&2
  "${pip[@]}" "${AVASR_TORCH_SPEC:-torch>=2.6}"
fi
locked="$("$VENV/bin/python" -c 'import platform, sys; print(int(sys.version_info[:2] == (3, 11) and platform.system() == "Linux" and platform.machine() == "x86_64"))')"
if [[ "$locked" == 1 && -f requirements/lock.txt && -z "${AVASR_NO_LOCK:-}" ]]; then
  echo "setup: installing the locked dependencies (requirements/lock.txt, hashes checked) into $VENV" >&2
  "${pip[@]}" --require-hashes --no-deps -r requirements/lock.txt
  "${pip[@]}" --no-deps -e ".[test]"
  "$VENV/bin/python" -m pip check --disable-pip-version-check >&2
else
  echo "setup: no lock for this Python/platform: resolving avasr's dependency ranges (NeMo takes a few minutes)" >&2
  "${pip[@]}" -e ".[test]"
fi
touch "$stamp"
