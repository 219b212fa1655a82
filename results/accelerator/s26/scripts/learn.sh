#!/bin/bash
# paper_a3c_private as impala (learner_batch 1, GAE targets), process backend: seed:actor_device pairs side by side
cd "$(dirname "$0")/.."
for pair in "$@"; do
  IFS=: read -r seed actor learner <<< "$pair"; learner=${learner:-cuda}
  timeout ${LIMIT:-260} python3 -m uavrl.cli train --config configs/paper_a3c_private.yaml --run-dir /tmp/learn_${seed}_${actor}_$learner \
    --backend process --learner-device $learner --actor-device $actor --set seed=$seed --set runner.kind=impala \
    --set runner.learner_batch=1 --set algo.targets=gae --set log.progress=false --set log.tensorboard=false \
    > /tmp/learn_${seed}_${actor}_$learner.log 2>&1 &
done
wait
for pair in "$@"; do
  IFS=: read -r seed actor learner <<< "$pair"; learner=${learner:-cuda}
  echo "seed $seed actors $actor learner $learner: $(tail -1 /tmp/learn_${seed}_${actor}_$learner.log)"
  cp /tmp/learn_${seed}_${actor}_$learner/summary.json $OUT/learn_seed${seed}_actor_${actor}_learner_$learner.json 2>/dev/null
  tail -n 400 /tmp/learn_${seed}_${actor}_$learner/training_log.csv > $OUT/log_seed${seed}_${actor}_$learner.csv 2>/dev/null
done
