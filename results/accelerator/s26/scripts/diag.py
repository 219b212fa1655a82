"""Where the learner's time goes at 15 actors (device diagnosis)."""
import json, sys, tempfile, time
from pathlib import Path
from uavrl.bench.train import bench_config
from uavrl.experiments.train import train

def main():
    variants = [a.split(":") for a in sys.argv[1:]]  # actor_device:K:steps:switch_interval
    for actor, k, steps, switch, *rest in variants:
        learner = rest[0] if rest else "cuda"
        sys.setswitchinterval(float(switch))
        cfg = bench_config(15, int(k), "runner.kind=impala", f"runner.learner_device={learner}",
                           f"runner.actor_device={actor}", f"runner.total_env_steps={steps}", preset="paper")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            s = train(cfg, Path(tmp) / "run")
            wall = time.perf_counter() - t
            loop = s["learner_loop"]
            busy = sum(loop.values())
            rate = s["env_steps"] / busy
            print(json.dumps({"switch": switch, "actor": actor, "K": int(k), "env_steps": s["env_steps"], "updates": s["updates"],
                              "wall": round(wall, 1), "loop_rate": round(rate), "per_update_ms":
                              {p: round(1000 * v / s["updates"], 1) for p, v in loop.items()},
                              "lag": s["policy_lag"]["mean"]}), flush=True)


if __name__ == "__main__":
    main()
