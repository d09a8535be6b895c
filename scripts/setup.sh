#!/usr/bin/env bash
# Set up vaelab on a fresh machine: a virtualenv in .venv with the CPU build of PyTorch,
# vaelab itself, and the MNIST data in the cache. With --test, also the test tools and
# what the browser tests drive (Debian's chromium + the playwright package), when possible.
#
#   bash scripts/setup.sh            # then: .venv/bin/vaelab train
#   bash scripts/setup.sh --test     # then: .venv/bin/python -m pytest
#
# Environment: PYTHON (default python3, needs >= 3.11); VAELAB_TORCH_INDEX, a pip index URL
# for torch (e.g. https://download.pytorch.org/whl/cpu) where the default would pull a CUDA
# build; VAELAB_DATA, the data cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --test)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: vaelab needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# 1. PyTorch, CPU build first: an unpinned torch would pull a multi-GB CUDA build.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "== installing PyTorch (CPU)"
  if [ -n "${VAELAB_TORCH_INDEX:-}" ]; then
    "${PIP[@]}" install -q torch --index-url "$VAELAB_TORCH_INDEX"
  else
    "${PIP[@]}" install -q "torch==2.13.0"
  fi
fi

# 2. vaelab (editable) and its light dependencies.
echo "== installing vaelab"
if [ "$WITH_TESTS" = 1 ]; then
  "${PIP[@]}" install -q -e ".[test]"
else
  "${PIP[@]}" install -q -e .
fi

# 3. Real data: MNIST into the cache (verified by SHA-256).
echo "== fetching MNIST"
.venv/bin/vaelab data fetch mnist

# 4. For the tests: Fashion-MNIST and Chromium from Debian where we may install packages.
if [ "$WITH_TESTS" = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    [ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "== apt-get install ${missing[*]}"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        "${missing[@]}" >/dev/null) || echo "setup.sh: apt-get failed; those tests will skip" >&2
    fi
  else
    echo "setup.sh: not root or no apt-get: Fashion-MNIST/browser tests may skip" >&2
  fi
fi
echo "== ready"
