#!/usr/bin/env bash
# Run benchmarks/mc_predict.py on the JAX and PyTorch backends of a GPU machine
# that has jax and torch but no TensorFlow and no keras. The keras wheel and
# its two missing dependencies travel in .whl/ (see README "Benchmarks").
# Usage (from the repository root): bash benchmarks/device_mc.sh [OUTDIR]
set -u
out=${1:-${OUT:-/tmp}}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available())"
# N=256 and N=4096: issue 18's targets are kreg within 2x (N=256) and 1.2x
# (N=4096) of the hand-written prefix-shared row (f).
for backend in jax torch; do
    for n in 256 4096; do
        echo "=== KERAS_BACKEND=$backend N=$n"
        KERAS_BACKEND=$backend timeout 180 python3 benchmarks/mc_predict.py --quick \
            --no-memory --n "$n" --json "$out/mc_predict_${backend}_$n.json" 2>&1 \
            | grep -v -i "warning" | tail -30
    done
done
