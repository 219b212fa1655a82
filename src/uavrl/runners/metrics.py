"""The metrics writer: one process draining a queue into CSV, TensorBoard and a progress bar."""

from __future__ import annotations

import csv
import queue as queue_module
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

LOG_COLUMNS = [
    "step",
    "worker_id",
    "episode",
    "return",
    "length",
    "policy_loss",
    "value_loss",
    "entropy",
    "grad_norm",
    "lr",
    "entropy_coef",
    "updates",
    "wall_time",
]
TB_SCALARS = ("return", "length", "policy_loss", "value_loss", "entropy", "grad_norm")


def writer_main(
    metrics: Any,
    run_dir: str,
    total_env_steps: int,
    start_steps: int,
    tensorboard: bool,
    progress: bool,
) -> None:
    """Append every row list from ``metrics`` to ``training_log.csv`` until a ``None`` arrives.

    Rows are flushed at least once a second, so a crash loses at most the last second of rows.
    """
    path = Path(run_dir) / "training_log.csv"
    new_file = not path.exists()
    tb = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
    bar = _ProgressBar(total_env_steps, start_steps) if progress else None
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        if new_file:
            writer.writeheader()
        last_flush = time.monotonic()
        while True:
            try:
                rows = metrics.get(timeout=0.5)
            except queue_module.Empty:
                rows = []
            if rows is None:
                break
            for row in rows:
                writer.writerow(row)
                if tb is not None:
                    for key in TB_SCALARS:
                        tb.add_scalar(f"worker_{row['worker_id']}/{key}", row[key], row["step"])
                    tb.add_scalar("all/return", row["return"], row["step"])
                if bar is not None:
                    bar.add(row)
            if time.monotonic() - last_flush > 1.0:
                handle.flush()
                if tb is not None:
                    tb.flush()
                if bar is not None:
                    bar.show()
                last_flush = time.monotonic()
    if tb is not None:
        tb.close()
    if bar is not None:
        bar.show(final=True)


class _ProgressBar:
    """One status line: env steps, steps/s and the mean of the last 50 episode returns."""

    def __init__(self, total: int, start_steps: int) -> None:
        self.total = total
        self.start_steps = start_steps
        self.steps = start_steps
        self.start = time.monotonic()
        self.recent: deque[float] = deque(maxlen=50)
        self.tty = sys.stdout.isatty()
        self.last_print = 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.steps = max(self.steps, int(row["step"]))
        self.recent.append(float(row["return"]))

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not (self.tty or final or now - self.last_print > 10.0):
            return
        self.last_print = now
        rate = (self.steps - self.start_steps) / max(now - self.start, 1e-9)
        fraction = min(self.steps / self.total, 1.0)
        width = 30
        filled = int(width * fraction)
        recent = f"{sum(self.recent) / len(self.recent):.2f}" if self.recent else "-"
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.steps:,}/{self.total:,} env steps "
            f"| {rate:,.0f} steps/s | recent return {recent}"
        )
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, flush=True)
