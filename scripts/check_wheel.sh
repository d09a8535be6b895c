#!/usr/bin/env bash
# Build vaelab's wheel, install it into a fresh virtualenv outside the repo and run the
# installed CLI there: the shipped example configs, `vaelab --version` and a short training
# run. Needs no network: torch and the dependencies come from the same places setup.sh
# installs them from, MNIST from the cache that `vaelab data fetch mnist` filled.
#
#   bash scripts/check_wheel.sh        (CI runs it after the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vaelab-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
BUILD_PY=${VAELAB_PYTHON:-.venv/bin/python}  # the set-up environment (setup.sh made it)

echo "== building the wheel"
# --no-build-isolation: build with the setuptools of .venv instead of downloading one into
# a throw-away environment; a fresh venv's bundled setuptools may be older than required
"$BUILD_PY" -m pip install -q "setuptools>=68" 2>&1 | grep -v "is ignored: it is neither" || true
"$BUILD_PY" -m pip wheel . --no-deps --no-build-isolation -q -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/vaelab-*.whl)

echo "== installing $(basename "$WHEEL") into a fresh virtualenv"
"$PY" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip --disable-pip-version-check -q)
if [ -n "${VAELAB_TORCH_INDEX:-}" ]; then
  "${PIP[@]}" install torch --index-url "$VAELAB_TORCH_INDEX"
else
  "${PIP[@]}" install "torch==2.13.0" 2>&1 | grep -v "is ignored: it is neither" || true
fi
"${PIP[@]}" install "$WHEEL" 2>&1 | grep -v "is ignored: it is neither" || true
"$WORK/venv/bin/python" -c "import vaelab, torch"  # the installs above did succeed

echo "== running the installed vaelab outside the repo"
cd "$WORK"
[ ! -e configs ] || { echo "check_wheel.sh: $WORK/configs should not exist" >&2; exit 1; }
"$WORK/venv/bin/vaelab" --version
"$WORK/venv/bin/vaelab" configs | grep -q '^default ' || {
  echo "check_wheel.sh: the wheel does not ship the example configs" >&2; exit 1; }
# one short epoch: 5,000 training images, evaluation on 500 test images
"$WORK/venv/bin/vaelab" train -c default --out "$WORK/run" --set train.epochs=1 \
  --set data.train_limit=5000 --set eval.limit=500 --set eval.iw_samples=100
test -f "$WORK/run/model.safetensors" && test -f "$WORK/run/report.html"
cd "$REPO"
echo "== wheel ok"
