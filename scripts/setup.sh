#!/usr/bin/env bash
# Create .venv and install salwidget with what a job needs.
#   bash scripts/setup.sh demo   # the widget, the demo models (PyTorch), JupyterLab and Voila
#   bash scripts/setup.sh test   # + TensorFlow, Captum, nbval, JupyterLab, Voila, Chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
if [ "$job" = "test" ]; then
    python -m pip install -q "tensorflow-cpu>=2.15"
    python -m pip install -q -e ".[test]"
    # pytorch-grad-cam (a test reference) without torchvision, which does not load with this torch build.
    python -m pip install -q --no-deps "grad-cam==1.5.7"
    # zennit (the LRP reference) without torchvision too: tests stub the two torchvision classes it imports.
    python -m pip install -q --no-deps "zennit==0.5.1"
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq chromium >/dev/null
        else
            sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
        fi
    fi
else
    python -m pip install -q -e ".[demo]" jupyterlab voila
fi
python -c "import salwidget, torch; print('salwidget', salwidget.__version__, '| torch', torch.__version__)"
