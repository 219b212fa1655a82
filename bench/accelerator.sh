#!/bin/bash
# The checks of runner.learner_device, runner.actor_device and runner.inference on a machine
# with a CUDA GPU, in one call (the device time of a session is short): the GPU tests, `uavrl
# bench train` with the learner on cuda and the actors' forward passes in one inference server on
# cuda beside the all-CPU rows and the rows of actors acting on the CPU themselves, on `paper`
# and `mec`, and the actors each acting on cuda under CUDA MPS where the machine has it. Run from
# the repository root; results go to $OUT (default /tmp/accelerator).
#
# The machine needs torch with CUDA; packages it lacks travel as wheels in .whl/ (pure Python,
# or built for its Python), and the code runs from src/ on PYTHONPATH.
# Usage: bench/accelerator.sh [bench seconds per row]
set -u
out=${OUT:-/tmp/accelerator}
mkdir -p "$out"
seconds=${1:-6}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/src
    export PATH=/tmp/site/bin:$PATH
else
    export PYTHONPATH=$PWD/src
fi
[ -e src/uavrl/bench ] || ln -s ../../bench src/uavrl/bench  # the installed package's uavrl.bench
export PYTHONUNBUFFERED=1
exec > >(tee "$out/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }
bench() {  # csv-name timeout bench-train-args...
    local name=$1 limit=$2
    shift 2
    timeout "$limit" python3 -m uavrl.cli bench train --seconds "$seconds" --rounds 1 --csv "$out/$name.csv" "$@" 2>&1 | tail -12
}

step machine
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; python3 -c \
    "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; \
    command -v nvidia-cuda-mps-control || echo "no nvidia-cuda-mps-control"; } | tee "$out/machine.txt"

step tests
timeout 170 python3 -m pytest -p no:cacheprovider -q -x tests/runners/test_learner_device.py \
    tests/runners/test_inference.py > "$out/tests.txt" 2>&1
tail -4 "$out/tests.txt"

step "bench paper: all-CPU a3c beside impala with its learner on cuda and actors acting on the CPU"
bench bench_paper 120 --preset paper --kinds a3c,impala --workers 15 --envs 1024 \
    --learner-device cuda --actor-device cpu

step "bench paper: impala with its learner and one inference server on cuda"
bench bench_paper_server 160 --preset paper --kinds impala --workers 15 --envs 256,1024,2048 \
    --learner-device cuda --actor-device cuda --inference server

step "bench mec: a3c, and impala with its learner and one inference server on cuda"
bench bench_mec 110 --preset mec --kinds a3c,impala --workers 15 --envs 1024 --learner-device cuda \
    --actor-device cuda --inference server

if command -v nvidia-cuda-mps-control >/dev/null; then
    step "bench paper under CUDA MPS: every actor acting on cuda itself"
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p /tmp/mps /tmp/mps-log
    nvidia-cuda-mps-control -d && sleep 1
    bench bench_paper_mps 60 --preset paper --kinds impala --workers 15 --envs 1024 \
        --learner-device cuda --actor-device cuda
    echo quit | nvidia-cuda-mps-control
fi
step done
