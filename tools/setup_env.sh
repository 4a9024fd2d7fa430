#!/usr/bin/env bash
# One set-up path for a fresh CPU machine (package registries only).
#
#   bash tools/setup_env.sh
#
# Creates .venv/ at the repo root, installs torch/torchvision, builds mmcv 2.1.0 with its C++
# ops only when no importable mmcv with ops exists (the wheel is cached outside the repo, so a
# second run takes seconds), then installs the remaining pins and this package in editable mode.
# Idempotent. Every step says what it does; a failure names the step.
#
# Environment:
#   MMSEG_OVSEG_CACHE   wheel/sdist cache (default: ~/.cache/mmseg-ovseg)
#   PYTHON              interpreter used to create .venv (default: python3)
#   MAX_JOBS            parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE="${MMSEG_OVSEG_CACHE:-$HOME/.cache/mmseg-ovseg}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f

STEP="start"
trap 'echo "[setup] FAILED at step: $STEP (see the output above)" >&2' ERR
say() { echo "[setup] $(date +%H:%M:%S) $*"; }
pipq() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

STEP="create virtual environment .venv"
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
else
  say "virtual environment exists: $VENV"
fi

STEP="install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
if "$PY" - <<PYEOF 2>/dev/null
import torch, torchvision
assert torch.__version__.split('+')[0] == '$TORCH_VERSION'
assert torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION'
PYEOF
then
  say "torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION already installed"
else
  say "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION (about 1 min)"
  pipq "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

STEP="install mmengine (mmcv imports it)"
pipq "mmengine==0.10.7"

STEP="provide mmcv $MMCV_VERSION with compiled ops"
has_mmcv_ops() {
  "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1
}
if has_mmcv_ops; then
  say "mmcv $MMCV_VERSION with ops is importable"
else
  TORCH_TAG="torch$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
  WHEEL_DIR="$CACHE/wheels/$TORCH_TAG"
  mkdir -p "$WHEEL_DIR"
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$WHEEL" ]; then
    STEP="build mmcv $MMCV_VERSION wheel with ops (20-30 min on 2 cores, once per machine)"
    say "no cached mmcv wheel for $TORCH_TAG in $WHEEL_DIR: building it"
    pipq "setuptools<70" wheel ninja packaging
    BUILD="$CACHE/build"
    mkdir -p "$BUILD"
    SDIST="$BUILD/mmcv-$MMCV_VERSION.tar.gz"
    if ! echo "$MMCV_SDIST_SHA256  $SDIST" | sha256sum -c --status 2>/dev/null; then
      # pip's own index configuration (mirrors, proxies, wheelhouses) applies; the checksum
      # pins the exact file whatever index served it.
      say "downloading the mmcv $MMCV_VERSION sdist (pip download)"
      DL="$BUILD/download.part"
      rm -rf "$DL"
      "$PY" -m pip download --disable-pip-version-check -q --no-binary :all: --no-deps \
        --no-build-isolation -d "$DL" "mmcv==$MMCV_VERSION"
      if ! echo "$MMCV_SDIST_SHA256  $DL/mmcv-$MMCV_VERSION.tar.gz" | sha256sum -c --status; then
        echo "[setup] the downloaded mmcv-$MMCV_VERSION.tar.gz does not have sha256 $MMCV_SDIST_SHA256" >&2
        false
      fi
      mv "$DL/mmcv-$MMCV_VERSION.tar.gz" "$SDIST"
      rm -rf "$DL"
    fi
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    rm -rf "$SRC"
    tar -xzf "$SDIST" -C "$BUILD"
    # torch >= 2.10 headers need C++20; the sdist hard-codes c++14/c++17.
    sed -i -e "s/-std=c++14/-std=c++20/g" -e "s/-std=c++17/-std=c++20/g" "$SRC/setup.py"
    grep -q -- "-std=c++20" "$SRC/setup.py"
    say "compiling (log: $BUILD/build.log)"
    if ! (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
          "$PY" -m pip wheel --no-build-isolation --no-deps -w "$BUILD/dist" . >"$BUILD/build.log" 2>&1); then
      tail -n 40 "$BUILD/build.log" >&2
      false
    fi
    # Move into the cache only once complete: an interrupted build leaves no half wheel behind.
    BUILT="$(ls "$BUILD"/dist/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)"
    mv "$BUILT" "$WHEEL_DIR/"
    WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
    rm -rf "$SRC"
  else
    say "using cached mmcv wheel $WHEEL"
  fi
  STEP="install the mmcv wheel $WHEEL"
  pipq --no-deps "$WHEEL"
  # The build needed setuptools<70; torch asks for >=77 and openmim imports pkg_resources,
  # which setuptools 81 removed.
  pipq "setuptools>=77,<81"
  has_mmcv_ops
  say "mmcv $MMCV_VERSION with ops installed"
fi

STEP="install requirements.txt and mmseg-ovseg (editable)"
say "installing requirements.txt and this package (pip install -e .)"
pipq -r requirements.txt
pipq --no-deps --no-build-isolation -e .

STEP="check imports"
"$PY" -c "import mmcv.ops, mmseg, open_clip, mmseg_ovseg; print('[setup] ok: mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| open_clip', open_clip.__version__, '| mmseg_ovseg', mmseg_ovseg.__version__)"
say "done. Activate with: source .venv/bin/activate"
