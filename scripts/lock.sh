#!/usr/bin/env bash
# Regenerate requirements/lock.txt: every dependency of `avasr[test]` pinned with its PyPI hashes, for
# CPython 3.11 on x86_64 Linux (the CI machine). torch and the CUDA packages only torch pulls in are
# left out: scripts/setup.sh installs torch first (a CPU build here, pip's CUDA build on a GPU machine).
#
#   make lock            # pins what the current .venv runs (its `pip freeze` is the constraint)
#   FRESH=1 make lock    # re-resolves from pyproject.toml alone (newest versions that fit)
#
# Needs uv (`pip install uv`) and PyPI; the lock is what the suite last passed with, so commit it only
# after `make test` passes on it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
UV="${UV:-uv}"
constraints=()
if [[ -z "${FRESH:-}" ]]; then
  tmp="$(mktemp)"
  trap 'rm -f "$tmp"' EXIT
  "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v -e '^-e' -e '^torch==' > "$tmp"
  constraints=(-c "$tmp")
fi
no_emit=(torch triton setuptools cuda-toolkit)
for pkg in cublas cuda-cupti cuda-nvrtc cuda-runtime cudnn-cu13 cufft cufile curand cusolver cusparse \
           cusparselt-cu13 nccl-cu13 nvjitlink nvshmem-cu13 nvtx; do
  no_emit+=("nvidia-$pkg")
done
args=()
for pkg in "${no_emit[@]}"; do args+=(--no-emit-package "$pkg"); done
"$UV" pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple --no-header \
  "${args[@]}" "${constraints[@]}" -o requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pinned packages)"
