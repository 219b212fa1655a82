"""One Stable-Baselines3 run for ``uavrl bench solve``, timed like a uavrl run.

``python -m uavrl.bench.sb3_solve ALGO SEED TARGET EVERY EPISODES BUDGET OUT ENV POLICY KWARGS``:
SB3's A2C or PPO with its default hyperparameters (but for KWARGS, a JSON object) and POLICY
(``MlpPolicy``, or ``MultiInputPolicy`` for Dict observations) on 8 envs of ENV, a greedy
evaluation of EPISODES episodes every EVERY env steps (SB3's EvalCallback on a separate env),
stopped at the first evaluation whose mean reaches TARGET. OUT receives the wall clock (epoch s)
of the first env step and of that hit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

N_ENVS = 8


def main(argv: list[str]) -> None:
    algo, seed, target, every, episodes, budget, out, env_id, policy, kwargs = argv
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    times: dict[str, float | None] = {"first_step_at": None, "first_hit_at": None}

    class FirstStep(BaseCallback):
        def _on_step(self) -> bool:
            if times["first_step_at"] is None:
                times["first_step_at"] = time.time()
            return True

    class StopAtTarget(BaseCallback):
        """Called by EvalCallback after each evaluation: stop at the first mean >= target."""

        def _on_step(self) -> bool:
            assert isinstance(self.parent, EvalCallback)
            if self.parent.last_mean_reward >= float(target):
                times["first_hit_at"] = time.time()
                return False
            return True

    env = make_vec_env(env_id, n_envs=N_ENVS, seed=int(seed))
    eval_env = make_vec_env(env_id, n_envs=1, seed=10_000 + int(seed))
    model = {"a2c": A2C, "ppo": PPO}[algo](policy, env, seed=int(seed), device="cpu", **json.loads(kwargs))
    evaluation = EvalCallback(
        eval_env,
        callback_after_eval=StopAtTarget(),
        n_eval_episodes=int(episodes),
        eval_freq=max(1, int(every) // N_ENVS),
        deterministic=True,
        verbose=0,
    )
    model.learn(total_timesteps=int(budget), callback=[FirstStep(), evaluation])
    Path(out).write_text(json.dumps({"algo": algo, "seed": int(seed), **times}))


if __name__ == "__main__":
    main(sys.argv[1:])
