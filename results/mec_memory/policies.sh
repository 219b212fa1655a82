#!/bin/bash
# The policy runs of results/mec_memory/README.md ("What the hidden state is worth, part by part"
# and after): mec_a3c.yaml's values on development seeds 0-1, each scored by `uavrl train
# --evaluate` (greedy, 100 episodes per training cell, evaluation seed 10000, the rules tuned on
# the same cells). Two runs at a time; a run whose summary exists is skipped.
#   bash results/mec_memory/policies.sh OUT_DIR
set -euo pipefail
out=${1:?usage: policies.sh OUT_DIR}
mkdir -p "$out"
config=$(cd "$(dirname "$0")/../../configs" && pwd)/mec_a3c.yaml
belief="--set model.predict_hidden=true --set model.belief=true"
long="--set runner.total_env_steps=5000000"
mlp="--set model.recurrent=false"
speed="--set env.params.observe_cloud_speed=true"

one() {  # name seed extra-sets...
  local name=$1 seed=$2
  shift 2
  [ -f "$out/${name}_s$seed/summary.json" ] && return 0
  # mec_a3c.yaml's budget and observation when these runs began; the sets after them win
  uavrl train --config "$config" --set seed="$seed" --set log.tensorboard=false \
    --set runner.total_env_steps=1000000 --set env.params.observe_cloud_speed=false \
    "$@" --run-dir "$out/${name}_s$seed" --evaluate --episodes 100 >"$out/${name}_s$seed.log" 2>&1
}

all_runs=(
  "none 0" "none 1" "mlp_none 0 $mlp" "mlp_none 1 $mlp"
  "all 0 --set env.params.observe_hidden=true" "all 1 --set env.params.observe_hidden=true"
  "shadowing 0 --set env.params.observe_hidden=[shadowing]"
  "blockage 0 --set env.params.observe_hidden=[blockage]"
  "cloud_load 0 --set env.params.observe_hidden=[cloud_load]"
  "cloud_tasks 0 --set env.params.observe_hidden=[cloud_tasks]"
  "channel 0 --set env.params.observe_hidden=[shadowing,blockage]"
  "channel 1 --set env.params.observe_hidden=[shadowing,blockage]"
  "cloud 0 --set env.params.observe_hidden=[cloud_load,cloud_tasks]"
  "cloud 1 --set env.params.observe_hidden=[cloud_load,cloud_tasks]"
  "long_gru 0 $long" "long_gru 1 $long" "long_mlp 0 $long $mlp" "long_mlp 1 $long $mlp"
  "belief 0 $belief" "belief 1 $belief" "long_belief 0 $long $belief" "long_belief 1 $long $belief"
  "long_all 0 $long --set env.params.observe_hidden=true" "long_all 1 $long --set env.params.observe_hidden=true"
  "cs_gru 0 $speed" "cs_gru 1 $speed" "cs_mlp 0 $speed $mlp" "cs_mlp 1 $speed $mlp"
  "cs_long_gru 0 $speed $long" "cs_long_belief 0 $speed $long $belief"
  "cs_long_gru 1 $speed $long" "cs_long_belief 1 $speed $long $belief"
  "cs_long_mlp 0 $speed $long $mlp" "cs_long_all 0 $speed $long --set env.params.observe_hidden=true"
  "cs_long_mlp 1 $speed $long $mlp" "cs_long_all 1 $speed $long --set env.params.observe_hidden=true"
)
# ONLY=PREFIX runs only the runs whose name starts with it
runs=()
for run in "${all_runs[@]}"; do [[ $run == ${ONLY:-}* ]] && runs+=("$run"); done
i=0
for run in "${runs[@]}"; do
  # shellcheck disable=SC2086
  one $run &
  i=$((i + 1))
  if ((i % 2 == 0)); then wait; fi
done
wait
