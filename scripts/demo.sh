#!/usr/bin/env bash
# The main job: set up .venv with the demo models, then open the quickstart in JupyterLab.
#   bash scripts/demo.sh            # extra arguments go to `jupyter lab`, e.g. --no-browser --port 8899
# PyTorch only: for Keras models add TensorFlow with `.venv/bin/pip install tensorflow-cpu` (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)  # containers often run as root
exec .venv/bin/jupyter lab "${extra[@]}" "$@" notebooks/quickstart.ipynb
