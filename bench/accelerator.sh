#!/bin/bash
# The checks of runner.learner_device on a machine with a CUDA GPU, in one call (the device time
# of a session is short): the GPU tests, `uavrl bench train` with the learner on cuda beside the
# all-CPU rows, on `paper` and `mec`, and one learning run of paper_a3c_private as impala with the
# learner on cuda. Run from the repository root; results go to $OUT (default /tmp/accelerator).
#
# The machine needs torch with CUDA; packages it lacks travel as wheels in .whl/ (pure Python,
# or built for its Python), and the code runs from src/ on PYTHONPATH.
# Usage: bench/accelerator.sh [bench seconds per row] [learning run: extra --set values...]
set -u
out=${OUT:-/tmp/accelerator}
mkdir -p "$out"
seconds=${1:-6}
shift || true
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
[ -e src/uavrl/bench ] || ln -s ../../bench src/uavrl/bench  # the installed package's uavrl.bench
export PYTHONUNBUFFERED=1
exec > >(tee "$out/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }

step machine
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; python3 -c \
    "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
    | tee "$out/machine.txt"

step tests
timeout 120 python3 -m pytest -p no:cacheprovider -q tests/runners/test_learner_device.py \
    > "$out/tests.txt" 2>&1
tail -4 "$out/tests.txt"

step "bench paper: impala, learner on cuda"
timeout 180 python3 -m uavrl.cli bench train --preset paper --kinds impala --workers 4,8,15 --envs 128,256 \
    --learner-device cuda --seconds "$seconds" --rounds 1 --csv "$out/bench_paper_cuda.csv" 2>&1 | tail -12
step "bench paper: all-CPU rows"
timeout 110 python3 -m uavrl.cli bench train --preset paper --kinds a3c,impala --workers 15 --envs 128,256 \
    --learner-device cpu --seconds "$seconds" --rounds 1 --csv "$out/bench_paper_cpu.csv" 2>&1 | tail -10

step "learning: paper_a3c_private as impala, learner on cuda"
timeout 200 python3 -m uavrl.cli train --config configs/paper_a3c_private.yaml --run-dir /tmp/learn --backend process \
    --learner-device cuda --set runner.kind=impala --set log.progress=false "$@" 2>&1 | tail -3
cp /tmp/learn/summary.json "$out/learn_summary.json" 2>/dev/null
tail -n 3 /tmp/learn/training_log.csv 2>/dev/null

step "bench mec"
timeout 100 python3 -m uavrl.cli bench train --preset mec --kinds a3c,impala --workers 15 --envs 256 \
    --learner-device cpu,cuda --seconds "$seconds" --rounds 1 --csv "$out/bench_mec.csv" 2>&1 | tail -10
step done
