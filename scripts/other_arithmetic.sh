#!/usr/bin/env bash
# Execute every notebook again under another machine's arithmetic and compare its checked outputs
# (cells marked NBVAL_CHECK_OUTPUT) with the saved ones. A checked output that depends on the CPU's
# thread count or vector width (a training outcome, an argmax over near ties, a float32 threshold)
# fails here on the developer's own machine, not first on a newcomer's.
#   bash scripts/other_arithmetic.sh            # every notebook
#   bash scripts/other_arithmetic.sh notebooks/targets.ipynb
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || set -- notebooks
# One thread (torch and TensorFlow read these), oneDNN and MKL held to AVX2, TensorFlow's oneDNN ops off.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 TF_ENABLE_ONEDNN_OPTS=0
exec .venv/bin/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
