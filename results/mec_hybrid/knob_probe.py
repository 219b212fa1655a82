"""What the hybrid knobs are worth to the strongest rule: the two-margin rule (its margins tuned
on the training cells of mec_hybrid_a3c.yaml, the cloud speed observed) acting and estimating at
a constant CPU frequency for LOCAL and a constant transmit power for OFFLOAD, each pair scored
on the same 100 tuning streams per training cell (evaluation seed 10000).
    python results/mec_hybrid/knob_probe.py > results/mec_hybrid/knob_probe.csv
"""

import dataclasses
from pathlib import Path

import numpy as np

from uavrl.config import load_config
from uavrl.envs.mec.baselines import CostEstimatingPolicy, tuning_returns
from uavrl.envs.mec.core import MecParams
from uavrl.experiments.evaluate import run_references, training_regime, tuning_worlds

CONFIG = Path(__file__).parents[2] / "configs" / "mec_hybrid_a3c.yaml"
EPISODES, SEED = 100, 10000


class ConstantPowerRule(CostEstimatingPolicy):
    """The rule with OFFLOAD's power set to ``power_dbm``: its rate estimates are the realised
    rates of its own earlier uploads (at that power) while fresh, else the nominal link's at
    full power (an optimistic estimate below full power)."""

    power_value: float = 1.0

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None):
        choice, values = super().__call__(obs, privileged)
        values = np.where(choice[:, None] == 1, self.power_value, values).astype(np.float32)
        return choice, values


def main() -> None:
    config = load_config(CONFIG)
    regime = training_regime(config)
    rule = {p.name: p for p in run_references(config, regime, 20, SEED)}["two_margin"]
    cells = [MecParams.from_env_params(w.agent_params[0]) for w in tuning_worlds(config, regime)]
    margins = rule.tuned_params
    print("f_loc_ghz,p_tx_dbm,local_margin,offload_margin,mean_return")
    for f_ghz in (1.0, 1.5, 2.0, 2.5):
        for p_dbm in (17.0, 20.0, 21.5, 23.0):
            policy = ConstantPowerRule(
                dataclasses.replace(rule.params, f_loc_ghz=f_ghz),
                margins["margin"],
                offload_margin=margins["offload_margin"],
            )
            policy.power_value = (p_dbm - 10.0) / 13.0
            score = tuning_returns(policy, cells, EPISODES, EPISODES, SEED).mean()
            print(f"{f_ghz},{p_dbm},{margins['margin']},{margins['offload_margin']},{score:.3f}", flush=True)


if __name__ == "__main__":
    main()
