"""The metrics writer: a thread of the run's parent writing CSV, TensorBoard and a progress line."""

from __future__ import annotations

import csv
import operator
import os
import queue as queue_module
import sys
import threading
import time
from collections import Counter, deque
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
_IN_COLUMN_ORDER = operator.itemgetter(*LOG_COLUMNS)  # a row's values as the columns order them
LOG_FILE = "training_log.csv"
TENSORBOARD_DIR = "tensorboard"
EVAL_LOG_FILE = "eval_log.csv"
EVAL_COLUMNS = ["step", "wall_time", "mean_return", "episodes"]
EVAL_ITEM = "eval"  # MetricsWriter.put((EVAL_ITEM, row)): an evaluation row
TB_SCALARS = ("return", "length", "policy_loss", "value_loss", "entropy", "grad_norm", "lr", "entropy_coef")
THROUGHPUT_WINDOW_S = 2.0  # all/env_steps_per_s: env steps over at least this much run time


def histogram_summary(counts: Counter[int]) -> dict[str, Any]:
    """A histogram of integer values (a policy lag, a replay age) as ``summary.json`` keeps it:
    ``{"histogram": {"value": count, ...}, "mean": mean}`` (mean 0 when empty)."""
    total = sum(counts.values())
    mean = sum(value * n for value, n in counts.items()) / max(total, 1)
    return {"histogram": {str(k): v for k, v in sorted(counts.items())}, "mean": mean}


def cut_log(path: Path, env_steps: int, worker_episodes: list[int] | None) -> list[int]:
    """Cut a resumed run's log back to its checkpoint; returns each worker's episode count.

    Rows logged after the checkpoint (their episodes are trained again) are dropped, so every
    (worker, episode) appears once and steps never go backwards. ``worker_episodes`` is the
    checkpoint's count per worker; a checkpoint written before it was recorded is cut by
    ``env_steps`` alone, and the counts are read from the rows kept.
    """
    if not path.exists():
        return list(worker_episodes or [])
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))

    def kept(row: dict[str, str]) -> bool:
        if int(float(row["step"])) > env_steps:
            return False
        worker = int(row["worker_id"])
        return worker_episodes is None or (
            worker < len(worker_episodes) and int(row["episode"]) <= worker_episodes[worker]
        )

    rows = [row for row in rows if kept(row)]
    _rewrite_csv(path, LOG_COLUMNS, rows)
    if worker_episodes is not None:
        return list(worker_episodes)
    counts: dict[int, int] = {}
    for row in rows:
        worker = int(row["worker_id"])
        counts[worker] = max(counts.get(worker, 0), int(row["episode"]))
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


def cut_eval_log(path: Path, env_steps: int) -> None:
    """Drop a resumed run's evaluations made after its checkpoint (they are made again)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(float(row["step"])) <= env_steps]
    _rewrite_csv(path, EVAL_COLUMNS, rows)


def _rewrite_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Replace ``path`` with ``rows`` atomically (a crash leaves the old file or the new one)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class _EvalLog:
    """``eval_log.csv``: one row per periodic evaluation, flushed at once (they are rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, row: dict[str, Any]) -> None:
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EVAL_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow({k: row[k] for k in EVAL_COLUMNS})


class ScalarWriter:
    """TensorBoard scalars through tensorboard's own event-file writer. ``torch.utils.tensorboard``
    writes the same events, but importing it imports torch: 2 s of the writer's start-up,
    competing for the cores with the workers' own start-up."""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = Event, Summary
        self._file = EventFileWriter(str(log_dir))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))])
        self._file.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MetricsWriter:
    """A thread of the run's parent process that writes every logged row: ``training_log.csv``,
    ``eval_log.csv``, TensorBoard and the progress line.

    ``put(rows)`` takes a list of training-log rows, ``put(("eval", row))`` an evaluation row;
    the parent puts its own rows and hands on those its children send through their channels
    (:mod:`uavrl.runners.ipc`). In the parent, the writer cannot die apart from the run: no row
    waits in another process, so a resume from the last checkpoint leaves no gap in the log.
    Rows are flushed at least once a second; :meth:`stop` writes every row put before it.
    """

    def __init__(
        self, run_dir: Path, total_env_steps: int, start_steps: int, tensorboard: bool, progress: bool
    ) -> None:
        self.run_dir = run_dir
        self.total_env_steps = total_env_steps
        self.start_steps = start_steps
        self.tensorboard = tensorboard
        self.progress = progress
        self._queue: queue_module.Queue[Any] = queue_module.Queue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="uavrl-writer", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def flush(self, timeout: float = 60.0) -> None:
        """Return once every row put so far is written and flushed to disk (a checkpoint then
        counts no episode whose row a crash could still lose)."""
        done = threading.Event()
        self._queue.put(done)
        deadline = time.monotonic() + timeout
        while not done.wait(0.2) and self._thread.is_alive() and time.monotonic() < deadline:
            pass
        self.check()
        if not done.is_set():
            raise RuntimeError(f"the metrics writer did not flush within {timeout:g} s")

    def check(self) -> None:
        """Raise if the writer failed (a full disk, an unwritable directory): rows would be lost."""
        if self._failure is not None:
            raise RuntimeError(f"the metrics writer failed: {self._failure!r}") from self._failure

    def stop(self) -> None:
        """Write every row put so far, close the files; raise if the writer had failed."""
        self._queue.put(None)
        self._thread.join()
        self.check()

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except BaseException as err:  # reported by check() and stop() in the parent's thread
            self._failure = err

    def _write_until_stopped(self) -> None:
        path = self.run_dir / LOG_FILE
        new_file = not path.exists()
        tb = ScalarWriter(self.run_dir / TENSORBOARD_DIR) if self.tensorboard else None
        bar = _ProgressBar(self.total_env_steps, self.start_steps) if self.progress else None
        eval_log = _EvalLog(self.run_dir / EVAL_LOG_FILE)
        mark: tuple[float, float] | None = None  # (env steps, run wall time) of the throughput window
        with path.open("a", newline="") as handle:
            # rows through the C writer in column order: half a DictWriter's time per row, which
            # counts where the writer shares a fast learner's process
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(LOG_COLUMNS)
            last_flush = time.monotonic()
            while True:
                try:
                    rows = self._queue.get(timeout=0.5)
                except queue_module.Empty:
                    rows = []
                if rows is None:
                    break
                if isinstance(rows, threading.Event):  # flush(): everything before it to disk
                    handle.flush()
                    if tb is not None:
                        tb.flush()
                    rows.set()
                    continue
                if isinstance(rows, tuple):  # (EVAL_ITEM, row)
                    evaluation = rows[1]
                    eval_log.write(evaluation)
                    if tb is not None:
                        tb.add_scalar("eval/mean_return", evaluation["mean_return"], evaluation["step"])
                    if bar is not None:
                        bar.eval_return = float(evaluation["mean_return"])
                    continue
                writer.writerows(map(_IN_COLUMN_ORDER, rows))
                for row in rows if tb is not None or bar is not None else ():
                    if tb is not None:
                        for key in TB_SCALARS:
                            if row[key] != "":  # an update's columns fill its first row only
                                tb.add_scalar(f"worker_{row['worker_id']}/{key}", row[key], row["step"])
                        tb.add_scalar("all/return", row["return"], row["step"])
                        step, wall = float(row["step"]), float(row["wall_time"])
                        if mark is None or wall < mark[1]:
                            mark = (step, wall)
                        elif wall - mark[1] >= THROUGHPUT_WINDOW_S:
                            rate = (step - mark[0]) / (wall - mark[1])
                            tb.add_scalar("all/env_steps_per_s", rate, int(step))
                            mark = (step, wall)
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
        self.eval_return: float | None = None

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
        left = max(self.total - self.steps, 0)
        eta = "done" if left == 0 else ("ETA -" if rate <= 0 else f"ETA {_duration(left / rate)}")
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.steps:,}/{self.total:,} env steps "
            f"| {rate:,.0f} steps/s | {eta} | recent return {recent}"
        )
        if self.eval_return is not None:
            line += f" | eval {self.eval_return:.2f}"
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, flush=True)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
