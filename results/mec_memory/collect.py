"""Merge the runs of ``policies.sh OUT_DIR`` into ``policies.csv`` (one row per run and seed:
greedy mean and per-cell scores, wall time, config hash); rows of runs not in OUT_DIR are kept.

Run: python results/mec_memory/collect.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

TABLE = Path(__file__).with_name("policies.csv")


def run_rows(out: Path) -> list[dict[str, object]]:
    rows = []
    for summary_file in sorted(out.glob("*_s*/summary.json")):
        name, _, seed = summary_file.parent.name.rpartition("_s")
        summary = json.loads(summary_file.read_text())
        evaluation = summary["eval"]
        rows.append(
            {
                "run": name,
                "seed": int(seed),
                "env_steps": summary["env_steps"],
                "greedy_mean": round(evaluation["mean_return"], 3),
                **{cell: round(score, 3) for cell, score in evaluation["per_cell"].items()},
                "wall_time_s": round(summary["wall_time_s"]),
                "config_hash": summary["config_hash"],
            }
        )
    return rows


def main() -> None:
    new = pd.DataFrame(run_rows(Path(sys.argv[1])))
    table = pd.concat([pd.read_csv(TABLE), new]).drop_duplicates(["run", "seed"], keep="last")
    table.sort_values(["run", "seed"]).to_csv(TABLE, index=False, lineterminator="\r\n")  # as csv writes
    print(table.sort_values(["run", "seed"]).to_string(index=False))


if __name__ == "__main__":
    main()
