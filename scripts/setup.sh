#!/usr/bin/env bash
# Create the virtual environment and install avasr (with test extras) into it.
#
#   scripts/setup.sh [VENV_DIR]
#
# Without a GPU it installs a CPU build of torch first ($AVASR_TORCH_SPEC, default torch==2.13.0,
# which these machines serve from local disk; elsewhere add PyTorch's CPU index through
# PIP_EXTRA_INDEX_URL). With a GPU, pip resolves torch's default (CUDA) build through the
# `torch>=2.6` range in pyproject.toml. Reruns are cheap: nothing is reinstalled when
# pyproject.toml has not changed.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.avasr-installed"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml ]]; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: no GPU found, installing a CPU build of torch (${AVASR_TORCH_SPEC:-torch==2.13.0})" >&2
  "${pip[@]}" "${AVASR_TORCH_SPEC:-torch==2.13.0}"
fi
echo "setup: installing avasr and its dependencies into $VENV (NeMo takes about a minute)" >&2
"${pip[@]}" -e ".[test]"
touch "$stamp"
