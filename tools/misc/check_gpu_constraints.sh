#!/usr/bin/env bash
# Resolve the GPU install of README "GPU clusters" against PyPI without installing anything:
# pip's resolver with requirements/gpu-constraints.txt, for Linux x86_64 wheels of each CPython
# version given (default 3.8 3.9 3.10 3.11, the versions torch 2.1.2 has wheels for).
#
#   bash tools/misc/check_gpu_constraints.sh [3.10 ...]
#   EXTRAS=1 bash tools/misc/check_gpu_constraints.sh    # with setup.py's extras (vis, web, export)
#
# mmcv 2.1.0 comes from OpenMMLab's wheel index (not PyPI, where it is a source archive that
# needs torch to build): it is replaced here by its declared runtime dependencies. Prints the
# resolved torch/torchvision/numpy/opencv/mmengine/mmsegmentation/open_clip versions per Python
# version; exits 1 if any version does not resolve. Environment: PYTHON (python3), PIP_ARGS.
set -u
DIR="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
VERSIONS=${*:-"3.8 3.9 3.10 3.11"}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# requirements.txt without mmcv (see above) and without the test runner
grep -v -E '^(mmcv|pytest)\b' "$DIR/requirements.txt" > "$TMP/req.txt"
if [ -n "${EXTRAS:-}" ]; then  # EXTRAS['all'] of setup.py, one per line
    "$PYTHON" - "$DIR/setup.py" >> "$TMP/req.txt" <<'PY'
import ast, sys
for node in ast.parse(open(sys.argv[1]).read()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == 'EXTRAS':
        print('\n'.join(sorted({p for v in ast.literal_eval(node.value).values() for p in v})))
PY
fi
status=0
for pv in $VERSIONS; do
    if "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --target "$TMP/target" \
        --report "$TMP/report.json" --python-version "$pv" --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform linux_x86_64 --only-binary=:all: \
        -c "$DIR/requirements/gpu-constraints.txt" ${PIP_ARGS:-} \
        addict numpy packaging Pillow pyyaml yapf 'opencv-python>=3' \
        -r "$TMP/req.txt" > "$TMP/log.txt" 2>&1; then
        "$PYTHON" - "$TMP/report.json" "$pv" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
got = {i['metadata']['name'].lower().replace('_', '-'): i['metadata']['version']
       for i in report['install']}
keys = ['torch', 'torchvision', 'numpy', 'opencv-python', 'mmengine', 'mmsegmentation',
        'open-clip-torch', 'scipy', 'matplotlib', 'setuptools', 'tensorboard', 'seaborn',
        'gradio', 'onnx', 'onnxruntime']
print(f'python {sys.argv[2]}: ok, ' + ', '.join(f'{k} {got[k]}' for k in keys if k in got))
PY
    else
        status=1
        echo "python $pv: does NOT resolve"
        tail -n 15 "$TMP/log.txt"
    fi
done
exit $status
