"""Command line: ``uavrl train | evaluate | baselines | study | report | tune | export | bench``."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.util
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.table import Table

from uavrl.errors import CheckpointError, ConfigError, RunInterrupted

if TYPE_CHECKING:  # pandas costs 0.5 s of start-up: imported where a command needs it
    import pandas as pd

    from uavrl.config import Config
    from uavrl.envs.worlds import Regime
    from uavrl.runners.supervise import CallAside


# Tables are wide: keep them whole when output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 200)
# Progress goes to stderr, so that `--format csv` output stays clean.
progress_console = Console(stderr=True)
# Errors too: `> log` keeps them on screen and `2>/dev/null` hides them, as with any Unix tool.
error_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


@contextlib.contextmanager
def evaluating(label: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress callback for ``evaluate_policies`` (one call per world, or per policy where a
    preset scores every cell at once): a spinner line in a terminal, else one line per call on
    stderr."""
    with progress_console.status(label) as status:

        def report(done: int, total: int, world: str) -> None:
            line = f"{label}: {done + 1}/{total} ({world})"
            status.update(line)
            if not progress_console.is_terminal:
                progress_console.print(line)

        yield report


def check_writable(path: str | None) -> None:
    """Refuse an output file that cannot be written, before any work is done: its folder is
    created and a probe file written and removed there (permissions alone say nothing to root)."""
    if path is None:
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = target.parent / f".uavrl-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write {str(target)!r}: {err.strerror or err}") from None
    if target.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: it is a directory")


def _write_csv(frame: pd.DataFrame, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False)
    console.print(f"wrote {target}")


def results_table(
    results: pd.DataFrame,
    what: str,
    episodes: int,
    seed: int,
    width: int | None = None,
    by_cell: bool = True,
) -> Table:
    """Policies as rows: each cell's mean (while they fit in ``width`` columns), the mean over
    cells and the normalised score in % (``experiments.normalise``: per cell, then the mean over
    cells), whose scale the title names. The title names the pool regime; the training world
    (shared regime) is a column of its own, left out of the mean over cells. An env without
    cells and pools (``by_cell`` False) gets one column of means, named as such."""
    if not by_cell:
        table = Table(title=f"{what}: mean episode return, {episodes} episodes, seed {seed}")
        table.add_column("policy")
        table.add_column("mean return", justify="right")
        table.add_column("95% CI", justify="right")
        for _, row in results.iterrows():
            table.add_row(
                str(row["policy"]), f"{row['mean']:.1f}", f"[{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
            )
        return table
    from uavrl.envs.worlds import TRAIN_WORLD
    from uavrl.experiments.normalise import normalised_percent

    policies = list(dict.fromkeys(results["policy"]))
    cells = list(dict.fromkeys(results["cell"]))
    means = results.pivot(index="policy", columns="cell", values="mean").loc[policies, cells]
    regime = ", ".join(dict.fromkeys(results["regime"]))
    name_width = max(len(p) for p in policies) + 3
    fits = name_width + 24 + (max(len(c) for c in cells) + 3) * len(cells) <= (width or console.width)
    shown = cells if fits else []
    note = "" if fits else "; per-cell values: --format markdown or --csv"
    normalised = normalised_percent(results[results["cell"] != TRAIN_WORLD])
    scale_note = f"; normalised % per cell, {normalised[1].label}" if normalised else ""
    table = Table(
        title=f"{what}: mean episode return per agent, {episodes} episodes per cell, seed {seed}, "
        f"{regime} cloud pools{note}{scale_note}"
    )
    table.add_column("policy")
    for cell in shown:
        table.add_column(cell, justify="right")
    table.add_column("mean over cells", justify="right")
    if normalised:
        table.add_column("normalised %", justify="right")
    in_cells = [c for c in cells if c != TRAIN_WORLD]
    for policy in policies:
        row = means.loc[policy]
        extra = [f"{normalised[0][policy]:.0f}%"] if normalised else []
        table.add_row(policy, *(f"{row[c]:.1f}" for c in shown), f"{row[in_cells].mean():.1f}", *extra)
    return table


def results_markdown(results: pd.DataFrame) -> str:
    """Cells x policies, ``mean ± CI half-width``, as a Markdown table."""
    policies = list(dict.fromkeys(results["policy"]))
    cells = list(dict.fromkeys(results["cell"]))
    means = results.pivot(index="cell", columns="policy", values="mean").loc[cells, policies].to_numpy()
    highs = results.pivot(index="cell", columns="policy", values="ci_high").loc[cells, policies].to_numpy()
    lines = ["| cell | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
    for cell, row, high in zip(cells, means, highs, strict=True):
        values = (f"{m:.2f} ± {h - m:.2f}" for m, h in zip(row, high, strict=True))
        lines.append(f"| {cell} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def show_results(
    results: pd.DataFrame, fmt: str, what: str, episodes: int, seed: int, by_cell: bool = True
) -> None:
    """The returns table (``by_cell``: per scenario cell, else one world), then the task metrics a
    preset's evaluation adds, averaged over cells (the CSV and Markdown have every column)."""
    from uavrl.experiments.evaluate import RESULT_COLUMNS

    if fmt == "csv":
        print(results.to_csv(index=False), end="")
        return
    if fmt == "markdown":
        print(results_markdown(results))
        return
    console.print(results_table(results[RESULT_COLUMNS], what, episodes, seed, by_cell=by_cell))
    metrics = [c for c in results.columns if c not in RESULT_COLUMNS]
    if metrics:
        means = results.groupby("policy", sort=False)[metrics].mean()
        table = Table(title="task metrics, mean over cells (latency in s, energy in J per task)")
        table.add_column("policy")
        for name in metrics:
            table.add_column(name.replace("_", " "), justify="right")
        for policy, row in means.iterrows():
            table.add_row(str(policy), *(f"{row[m]:.3f}" for m in metrics))
        console.print(table)


def cmd_baselines(args: argparse.Namespace) -> None:
    import pandas as pd

    from uavrl.envs.preset import get_preset
    from uavrl.envs.tuning import policy_params
    from uavrl.envs.worlds import cell_worlds
    from uavrl.experiments.evaluate import bound_results, evaluate_policies

    preset = get_preset(args.preset)
    if args.bound and not preset.has_bound:
        raise _no_bound("--bound", preset.name)
    check_writable(args.csv)
    cells = preset.resolve_cells(args.cells)
    base = _baselines_env_params(args)

    def worlds(chosen: Sequence[Any]) -> list:
        return cell_worlds([(c.name, {**base, **c.env_params()}) for c in chosen], args.pool, args.agents)

    with progress_console.status(f"tuning {preset.reference_description} on the seen cells"):
        policies = preset.reference_policies(
            base, worlds(preset.cell_sets["seen"]), args.tune_episodes, args.seed
        )
    tuned = "; ".join(
        f"{p.name} " + ", ".join(f"{k}={v:g}" for k, v in policy_params(p).items())
        for p in policies
        if policy_params(p)
    )
    progress_console.print(f"tuned on seen cells ({args.pool} pools): {tuned}")
    with evaluating(f"evaluating {len(policies)} policies") as progress:
        results = evaluate_policies(policies, worlds(cells), args.episodes, args.seed, progress=progress)
    if args.bound:
        with evaluating("solving the hindsight bound") as progress:
            bounds = bound_results(worlds(cells), args.episodes, args.seed, args.time_limit, progress)
        results = pd.concat([results, bounds], ignore_index=True)
    what = f"preset {preset.name}" + (f" as {args.config} sets it" if args.config else "")
    show_results(results, args.format, what + preset.units_note(base), args.episodes, args.seed)
    if args.csv:
        _write_csv(results, args.csv)


def _no_bound(flag: str, preset: str) -> ConfigError:
    """The refusal of a hindsight bound for a preset that has none."""
    from uavrl.envs.preset import presets_with

    built = " and ".join(repr(p) for p in presets_with("has_bound"))
    return ConfigError(
        f"{flag}: the hindsight bound is built for {built}, got {preset!r} (its normalised scale tops "
        "out at its strongest privileged reference)"
    )


def _baselines_env_params(args: argparse.Namespace) -> dict[str, Any]:
    """The env parameters the rules run with: the preset's defaults, or with ``--config`` a run
    config of that preset (reward scale, observation columns, cost weights), its cell
    parameters left to the cells."""
    if not args.config:
        return {"preset": args.preset}
    from uavrl.config import load_config

    config = load_config(args.config)
    preset = config.env.uavrl_preset
    if preset is None or config.env.preset != args.preset:
        raise ConfigError(
            f"baselines --config takes a run config of --preset {args.preset}; {args.config} runs "
            f"{config.env.id} preset {config.env.preset!r}"
        )
    return {k: v for k, v in config.env.params.items() if k not in preset.cell_params}


def _add_world_arguments(parser: argparse.ArgumentParser, preset_help: str, episodes: int) -> None:
    """What `baselines` and `bound` both take: the preset, the cells, their streams, the pool
    regime and the solver's time per episode."""
    from uavrl.envs.presets import DEFAULT_PRESET

    parser.add_argument("--preset", default=DEFAULT_PRESET, help=preset_help)
    parser.add_argument("--episodes", type=int, default=episodes, help="episodes per cell")
    parser.add_argument("--cells", default="seen", help="cell sets and/or cell names, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation streams (and of random)")
    parser.add_argument("--pool", choices=["private", "shared"], default="private", help="cloud pool regime")
    parser.add_argument("--agents", type=int, default=5, help="agents per shared pool (--pool shared)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=20.0,
        help="paper: seconds per episode's integer programme; past it the solver's dual bound is "
        "reported (still a bound)",
    )


def cmd_bound(args: argparse.Namespace) -> None:
    """Per cell: the mean bound with its CI, the mean return of the best schedules found (their
    replay scores exactly that), and how many episodes were solved to optimality."""
    import time

    import numpy as np
    import pandas as pd

    from uavrl.envs.paper.bound import hindsight_bounds
    from uavrl.envs.preset import get_preset
    from uavrl.envs.worlds import cell_worlds
    from uavrl.experiments.evaluate import mean_ci

    preset = get_preset(args.preset)
    if not preset.has_bound:
        raise _no_bound("--preset", preset.name)
    for flag, value in (("--episodes", args.episodes), ("--agents", args.agents)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    check_writable(args.csv)
    cells = preset.resolve_cells(args.cells)
    worlds = cell_worlds(
        [(c.name, {"preset": preset.name, **c.env_params()}) for c in cells], args.pool, args.agents
    )
    rows = []
    with evaluating("solving the hindsight bound") as progress:
        for i, world in enumerate(worlds):
            progress(i, len(worlds), world.name)
            start = time.perf_counter()
            solved = hindsight_bounds(world, args.seed, np.arange(args.episodes), args.time_limit)
            mean, _, low, high = mean_ci(np.array([b.bound for b in solved]))
            rows.append(
                {
                    "cell": world.name,
                    "regime": world.regime,
                    "agents": world.n_agents,
                    "episodes": args.episodes,
                    "bound": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "schedule_return": float(np.mean([b.objective for b in solved])),
                    "optimal_episodes": sum(b.optimal for b in solved),
                    "seconds": time.perf_counter() - start,
                }
            )
    frame = pd.DataFrame(rows)
    table = Table(
        title=f"hindsight bound, preset {preset.name}, {args.pool} cloud pools "
        f"({frame['agents'].iloc[0]} agent(s) per world), {args.episodes} episodes per cell, "
        f"seed {args.seed}: mean episode return per agent"
    )
    for column in ("cell", "bound [95% CI]", "best schedule", "solved to optimality", "seconds"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for r in rows:
        table.add_row(
            r["cell"],
            f"{r['bound']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            f"{r['schedule_return']:.2f}",
            f"{r['optimal_episodes']}/{r['episodes']}",
            f"{r['seconds']:.1f}",
        )
    console.print(table)
    if args.csv:
        _write_csv(frame, args.csv)


def cmd_train(args: argparse.Namespace) -> None:
    # the config is read and validated before torch is imported (which takes seconds): a refused
    # value is answered at once
    from uavrl.config import load_config

    if args.bound and not args.evaluate:
        raise ConfigError("--bound adds a row to the evaluation table: give --evaluate as well")
    if args.resume:
        given = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--set", args.set),
                ("--run-dir", args.run_dir),
                ("--backend", args.backend),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"--resume continues a run with its own config.yaml; {', '.join(given)} cannot change it "
                "(start a new run with --config to change values)"
            )
        from uavrl.experiments import train as training
        from uavrl.experiments.rundir import RunDir

        run_dir = Path(args.resume)
        run = RunDir(run_dir)
        if run.config_file.exists() and run.finished_summary() is not None:
            console.print(
                f"{run_dir} has finished; nothing to resume (uavrl evaluate --run {run_dir} scores it again)"
            )
            return
        if run.has_checkpoint():
            steps = run.checkpointed_env_steps()
            total = run.config().runner.total_env_steps
            console.print(f"resuming {run_dir} from its last checkpoint, at {steps:,} of {total:,} env steps")
        devices = {"learner_device": args.learner_device, "actor_device": args.actor_device}
        config = run.config()
        with _references_while_training(args, config) as references:
            summary = training.resume(run_dir, ray_address=args.address, **devices)
            _report_training(summary, run_dir, args, config, references)
    else:
        if not args.config:
            raise ConfigError("uavrl train needs --config FILE (or --resume RUN_DIR)")
        backend = [f"runner.backend={args.backend}"] if args.backend else []
        address = [f"runner.ray_address={args.address}"] if args.address else []
        device = [f"runner.learner_device={args.learner_device}"] if args.learner_device else []
        device += [f"runner.actor_device={args.actor_device}"] if args.actor_device else []
        config = load_config(args.config, [*args.set, *backend, *address, *device])
        from uavrl.experiments import train as training
        from uavrl.experiments.rundir import next_free_run_dir

        # an explicit --run-dir holding a run is refused; the default gets the next free number
        run_dir = Path(args.run_dir) if args.run_dir else next_free_run_dir(Path("runs") / config.name)
        console.print(f"run directory {run_dir}  (config hash {config.hash()})")
        with _references_while_training(args, config) as references:
            summary = training.train(config, run_dir)
            _report_training(summary, run_dir, args, config, references)


@contextlib.contextmanager
def _references_while_training(args: argparse.Namespace, config: Config) -> Iterator[CallAside | None]:
    """With ``--evaluate``, the references the run will be judged beside (and with ``--bound``
    the hindsight bound), computed in a process of their own while it trains: they do not depend
    on the model. Their worlds are solved on the cores the run's workers leave free."""
    if not args.evaluate:
        yield None
        return
    from uavrl.experiments.evaluate import reference_results, training_regime
    from uavrl.runners.supervise import CallAside

    _check_evaluation(config, None, None, args.bound)
    free_cores = max(1, (os.cpu_count() or 1) - config.worker_processes)
    episodes = args.episodes or config.eval.episodes
    what = (config, training_regime(config), None, episodes, config.eval.seed, args.bound, free_cores)
    aside = CallAside("references", reference_results, *what)
    try:
        yield aside
    finally:
        aside.close()


def _report_training(
    summary: dict[str, Any],
    run_dir: Path,
    args: argparse.Namespace,
    config: Config,
    references: CallAside | None,
) -> None:
    """Print how the run ended and, with ``--evaluate``, its table beside ``references``."""
    ev = summary["eval"]
    if summary.get("stopped_at_target"):
        hit = summary["eval_during_training"]["first_hit"]
        console.print(
            f"stopped at its target: the periodic evaluation reached {hit['mean_return']:.2f} "
            f"(eval.stop_at_return {summary['eval_during_training']['stop_at_return']:g}) at "
            f"{int(hit['env_steps']):,} env steps"
        )
    console.print(
        f"finished: {summary['env_steps']:,} env steps, {summary['updates']:,} updates, "
        f"{summary['wall_time_s']:.0f} s ({summary['env_steps_per_s']:,.0f} steps/s); greedy eval "
        f"{ev['mean_return']:.2f} over {ev['episodes']} episodes x {len(ev['cells'])} cell(s)"
    )
    if references is not None:
        episodes = args.episodes or config.eval.episodes  # as the references were computed
        _evaluate_run(run_dir, episodes, None, None, None, bound=args.bound, references=references)


def _evaluate_run(
    run_dir: Path,
    episodes: int,
    cells: str | None,
    csv: str | None,
    pool: str | None,
    fmt: str = "table",
    bound: bool = False,
    references: CallAside | None = None,
) -> None:
    """Score a run's learned policies beside its references (computed here, or taken from
    ``references``, computed while it trained with the same arguments) and print the table."""
    from uavrl.config import config_from_dict
    from uavrl.experiments.evaluate import (
        eval_worlds,
        evaluate_policies,
        reference_results,
        run_policies,
        training_regime,
    )
    from uavrl.experiments.rundir import RunDir

    models, meta = RunDir(run_dir).load_models()
    config = config_from_dict(meta["config"])
    seed = config.eval.seed
    preset = config.env.uavrl_preset
    _check_evaluation(config, pool, cells, bound)
    trained_in = training_regime(config)
    regime = cast("Regime", pool or trained_in)
    policies = [
        p
        for mode in ("greedy", "stochastic")
        for p in run_policies(config, models, regime, mode == "greedy", seed, f"_{mode}")
    ]
    worlds = eval_worlds(config, regime, cells)
    with evaluating(f"evaluating {len(policies)} learned policies") as progress:
        results = evaluate_policies(policies, worlds, episodes, seed, config.env.id, progress)
    if references is None:
        # the same worlds (reward scale included) as the learned policies
        cores = os.cpu_count() or 1
        rows = reference_results(config, regime, cells, episodes, seed, bound, cores, stage=evaluating)
    else:
        with progress_console.status("finishing the references (computed while the run trained)"):
            rows = references.result()
    import pandas as pd

    results = pd.concat([rows, results])
    note = "" if regime == trained_in else f" (transfer: trained with {trained_in} pools)"
    scale = preset.units_note(dict(config.env.params)) if preset is not None else ""
    show_results(results, fmt, f"{run_dir}{note}{scale}", episodes, seed, by_cell=preset is not None)
    if csv:
        _write_csv(results, csv)


def _check_evaluation(config: Config, pool: str | None, cells: str | None, bound: bool) -> None:
    """Refuse evaluation options that do not apply to the run's env or preset."""
    preset = config.env.uavrl_preset
    for flag, given in (("--pool", pool), ("--cells", cells), ("--bound", bound)):
        if given and preset is None:
            raise ConfigError(
                f"{flag} applies to uavrl/Offload-v0 runs only; {config.env.id!r} is evaluated in one world"
            )
    if bound and preset is not None and not preset.has_bound:
        raise _no_bound("--bound", preset.name)
    if pool and preset is not None and not preset.pools_across_workers:
        # its clouds are shared inside each worker's core (as it trained), not across workers
        raise ConfigError(f"--pool: a run of preset {preset.name!r} is scored with its clouds as it trained")


def cmd_evaluate(args: argparse.Namespace) -> None:
    check_writable(args.csv)
    _evaluate_run(Path(args.run), args.episodes, args.cells, args.csv, args.pool, args.format, args.bound)


def cmd_bench(args: argparse.Namespace) -> None:
    check_writable(args.csv)
    if args.target == "decide":
        _bench_decide(args)
        return
    if args.target == "solve":
        _bench_solve(args)
        return
    if args.target == "chaos":
        _bench_chaos(args)
        return
    if args.target == "starts":
        _bench_starts(args)
        return
    if args.seconds is None:
        args.seconds = 2.0 if args.target == "env" else 24.0
    if args.target == "env":
        from uavrl.bench import env as bench_env

        with console.status("measuring env throughput"):
            frame = bench_env.run(args.preset, seconds=args.seconds)
        base = float(frame.loc[frame["impl"] == "gymnasium", "steps_per_s"].iloc[0])
        title = f"env steps/s, preset {args.preset}, random actions"
        label = "x gymnasium"
    elif args.target == "serial":
        from uavrl.bench import serial as bench_serial
        from uavrl.config import load_config

        config = load_config(args.config or "configs/paper_a3c.yaml", ["runner.share=true"])
        with console.status("measuring one serial run's throughput"):
            frame = bench_serial.run(config, seconds=args.seconds)
        # the first row: per-worker acting, or batched alone where workers must step together
        base = float(frame["steps_per_s"].iloc[0])
        title = f"one study run (serial, one core), {args.config or 'configs/paper_a3c.yaml'}"
        label = f"x {frame['acting'].iloc[0].replace('_', '-')} acting"
    else:
        from uavrl.bench import train as bench_train
        from uavrl.config import load_config
        from uavrl.runners.device import actor_device, learner_device

        workers = [int(x) for x in args.workers.split(",")]
        envs = [int(x) for x in args.envs.split(",")]
        kinds = args.kinds.split(",") if args.kinds else list(bench_train.KINDS)
        devices = args.learner_device.split(",")
        actor_devices = args.actor_device.split(",")
        finders = ((learner_device, "learner_device", devices), (actor_device, "actor_device", actor_devices))
        for find, field, names in finders:
            for device in names:  # refused before the first row runs, naming what the machine has
                find(load_config(None, ["runner.kind=impala", f"runner.{field}={device}"]))
        with console.status("measuring training throughput (several minutes)"):
            modes = args.inference.split(",")
            frame = bench_train.run(
                workers, envs, args.seconds, args.rounds, kinds, devices, args.preset, actor_devices, modes
            )
        # against the classic design's workers where they ran, else the fastest all-CPU row
        reference = frame[frame["runner"] == "reference"]
        devices_on_cpu = (frame["learner_device"] == "cpu") & (frame["actor_device"] == "cpu")
        on_cpu = frame[devices_on_cpu & (frame["inference"] == "actors")]
        base_rows, label = (
            (reference, "x best reference")
            if len(reference)
            else (on_cpu, "x best all-CPU row")
            if len(on_cpu)
            else (frame, "x best row")
        )
        base = float(base_rows["steps_per_s"].max())
        title = f"training env steps/s, preset {args.preset}, GRU 128 + LayerNorm, rollout 20"
    table = Table(title=title)
    for column in [*frame.columns[:-1], "steps/s", label]:
        table.add_column(str(column), justify="right")
    for row in frame.itertuples(index=False):
        rate = float(row[-1])
        table.add_row(*(str(v) for v in row[:-1]), f"{rate:,.0f}", f"{rate / base:.1f}")
    console.print(table)
    if args.csv:
        _write_csv(frame, args.csv)


def _bench_solve(args: argparse.Namespace) -> None:
    from uavrl.bench import solve

    task = solve.TASKS.get(args.env)
    if task is None:
        raise ConfigError(f"--env {args.env!r}: bench solve has rows for {', '.join(solve.TASKS)}")
    with progress_console.status(f"timing {args.seeds} seeds per row, each a fresh process (minutes)"):
        runs, table = solve.run(
            args.seeds, task, include_sb3=not args.no_sb3, max_seconds=args.max_seconds or 180.0
        )
    title = (
        f"wall time to the first greedy evaluation >= {task.target:g} on {args.env}, "
        f"from process launch, {args.seeds} seeds (unsolved seeds count as inf)"
    )
    rich_table = Table(title=title)
    for column in ("row", "solved", "median (s)", "min (s)", "max (s)", "start-up median (s)"):
        rich_table.add_column(column, justify="right")
    for row in table.itertuples(index=False):
        rich_table.add_row(
            row.row,
            row.solved,
            f"{row.median_s:.1f}",
            f"{row.min_s:.1f}",
            f"{row.max_s:.1f}",
            f"{row.startup_median_s:.2f}",
        )
    console.print(rich_table)
    for failure in runs[runs["error"] != ""].itertuples(index=False):
        progress_console.print(f"{failure.row} seed {failure.seed} failed: {failure.error}")
    if args.csv:
        _write_csv(runs, args.csv)


def _bench_starts(args: argparse.Namespace) -> None:
    from uavrl.bench import starts

    kinds = tuple((args.kinds or ",".join(starts.STARTS)).split(","))
    unknown = [k for k in kinds if k not in starts.STARTS]
    if unknown:
        raise ConfigError(
            f"--kinds: {unknown} are not starting configs; choose from {', '.join(starts.STARTS)}"
        )
    max_seconds = args.max_seconds or 1800.0
    with progress_console.status(
        f"training {args.seeds} seeds per config and task, 2 at a time (8 seeds: about 15 min here)"
    ):
        runs, table = starts.run(args.seeds, kinds, max_seconds=max_seconds)
    rich_table = Table(title=f"starting configs: final greedy return at their budgets, {args.seeds} seeds")
    for column in ("config", "env", "passed", "target", "median", "worst", "median wall (s)"):
        rich_table.add_column(column, justify="right")
    for row in table.itertuples(index=False):
        rich_table.add_row(
            row.config,
            row.env,
            row.passed,
            f"{row.target:g}",
            f"{row.median:.1f}",
            f"{row.worst:.1f}",
            f"{row.median_wall_s:.0f}",
        )
    console.print(rich_table)
    for failure in runs[runs["error"] != ""].itertuples(index=False):
        progress_console.print(
            f"{failure.config} {failure.model} {failure.env} seed {failure.seed}: {failure.error}"
        )
    if args.csv:
        _write_csv(runs, args.csv)


def _bench_chaos(args: argparse.Namespace) -> None:
    from uavrl.bench import chaos

    allowed = chaos.RAY_KINDS if args.backend == "ray" else chaos.KINDS
    kinds = tuple(args.kinds.split(",")) if args.kinds else allowed
    unknown = sorted(set(kinds) - set(allowed))
    if unknown:
        raise ConfigError(
            f"--kinds: {unknown} are not runner kinds of bench chaos on --backend {args.backend}; "
            f"choose from {list(allowed)}"
        )
    if args.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("bench chaos --backend ray needs Ray: pip install 'uavrl[ray]' -c constraints.txt")
    with progress_console.status(
        f"injecting {args.kills} faults into short runs of {', '.join(kinds)} on {args.backend} (minutes)"
    ):
        trials, table = chaos.run(args.kills, kinds, seed=args.seed, backend=args.backend)
    rich_table = Table(
        title=f"chaos: {args.kills} faults (kill -9 / SIGSTOP of a child, kill -9 of the run and --resume) "
        f"on {args.backend}, seed {args.seed}"
    )
    for column in table.columns:
        rich_table.add_column(str(column), justify="right")
    for row in table.itertuples(index=False):
        rich_table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(rich_table)
    for trial in trials[trials["error"] != ""].itertuples(index=False):
        progress_console.print(f"{trial.kind}: {trial.error}")
    if args.csv:
        _write_csv(trials, args.csv)


def _bench_decide(args: argparse.Namespace) -> None:
    from uavrl.bench import decide
    from uavrl.experiments.rundir import RunDir

    if not args.run:
        raise ConfigError("uavrl bench decide needs --run RUN_DIR (the policy to time)")
    models, meta = RunDir(args.run).load_models()
    with progress_console.status("timing decisions at batch 1 (torch and onnxruntime)"):
        frame = decide.run(models[0], meta["config"])
    table = Table(title=f"per-decision latency at batch 1, one core, {args.run}")
    for column in ("runtime", "model", "p50 (us)", "p99 (us)", "mean (us)"):
        table.add_column(column, justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(row.runtime, row.model, f"{row.p50_us:.1f}", f"{row.p99_us:.1f}", f"{row.mean_us:.1f}")
    console.print(table)
    if args.csv:
        _write_csv(frame, args.csv)


def cmd_export(args: argparse.Namespace) -> None:
    from uavrl.experiments.export import export_policy
    from uavrl.experiments.rundir import RunDir

    check_writable(args.out)
    models, meta = RunDir(args.run).load_models()
    if len(models) != 1 and args.model is None:
        raise ConfigError(
            f"{args.run} holds {len(models)} models (individual learning): choose one with --model"
        )
    index = args.model or 0
    if not 0 <= index < len(models):
        raise ConfigError(f"--model must be in [0, {len(models) - 1}], got {index}")
    with progress_console.status("exporting to ONNX"):
        sidecar = export_policy(models[index], Path(args.out), meta["config"])
    console.print(f"wrote {args.out} and {sidecar}")


def cmd_pareto(args: argparse.Namespace) -> None:
    from uavrl.config import load_config
    from uavrl.experiments.pareto import parse_weights, run_pareto

    base = load_config(args.config, args.set)
    weights = parse_weights(args.weights)
    out = Path(args.run_dir) if args.run_dir else Path("runs") / f"pareto_{base.name}"
    console.print(f"pareto {base.name}: {len(weights)} weight vector(s) x {args.seeds} seed(s) into {out}")
    frame = run_pareto(
        base,
        weights,
        args.seeds,
        out,
        args.episodes,
        args.env_steps,
        lambda line: progress_console.print(f"pareto: {line}"),
    )
    learned = frame[frame["kind"] == "learned"].groupby("weights", sort=False)
    columns = {
        "mean_return": ("return", "{:.2f}"),
        "latency_mean": ("mean latency (s)", "{:.3f}"),
        "energy_per_task": ("energy per task (J)", "{:.4f}"),
        "drop_rate": ("drop rate", "{:.1%}"),
    }
    summary = learned[list(columns)].mean()
    table = Table(title=f"learned policies, greedy, mean over {args.seeds} seed(s) and the training cells")
    table.add_column("weights (latency, energy, drop, discard)")
    for header, _ in columns.values():
        table.add_column(header, justify="right")
    for label, row in summary.iterrows():
        table.add_row(str(label), *(fmt.format(row[key]) for key, (_, fmt) in columns.items()))
    console.print(table)
    console.print(f"wrote {out / 'pareto.csv'} and {out / 'pareto.png'}")


def cmd_study(args: argparse.Namespace) -> None:
    from rich.status import Status

    from uavrl.experiments.report import headline_summary, write_report
    from uavrl.experiments.study import Progress, StudyFailed, load_study, plan, run_study

    study = load_study(args.config, args.set)
    study_dir = Path(args.run_dir) if args.run_dir else Path("runs") / study.name
    if args.address and args.backend != "ray":
        raise ConfigError("--address needs --backend ray")
    where = "as Ray tasks" if args.backend == "ray" else f"{study.runs_at_once} at a time"
    console.print(f"study {study.name}: {len(plan(study, study_dir))} runs into {study_dir}, {where}")
    shown: list[tuple[Any, ...]] = []

    def show(progress: Progress, status: Status) -> None:
        status.update(progress.line(study.runs_at_once))
        state = (progress.done + progress.skipped, progress.failed, progress.references, progress.inside)
        if not console.is_terminal and (not shown or shown[-1] != state):
            console.print(progress.line(study.runs_at_once))  # logs and CI get a line per change
            shown.append(state)

    try:
        with console.status("starting") as status:
            _, progress = run_study(
                study, study_dir, lambda p: show(p, status), backend=args.backend, address=args.address
            )
        if console.is_terminal:
            console.print(progress.line(study.runs_at_once))
    except StudyFailed as err:
        console.print(f"[red]{err}[/red]")
        write_report(study_dir)
        raise SystemExit(1) from None
    report = write_report(study_dir)
    console.print(headline_summary(study_dir))
    console.print(f"results: {study_dir / 'results.csv'}; report: {report}")


def cmd_report(args: argparse.Namespace) -> None:
    from uavrl.experiments.report import publish, write_report

    console.print(f"wrote {write_report(Path(args.study_dir))}")
    if args.publish:
        for path in publish(Path(args.study_dir), Path(args.publish)):
            console.print(f"wrote {path}")


def cmd_tune(args: argparse.Namespace) -> None:
    try:
        import optuna
    except ImportError:
        raise ConfigError("uavrl tune needs Optuna: pip install 'uavrl[tune]' -c constraints.txt") from None
    from uavrl.experiments.tune import BEST_FILE, load_tune, run_tuning

    tune = load_tune(args.config, args.set)
    tune_dir = Path(args.run_dir) if args.run_dir else Path("runs") / tune.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console.print(f"tuning {tune.name}: {args.trials} more trial(s) of {tune.seeds} seeds into {tune_dir}")
    study = run_tuning(tune, tune_dir, args.trials, args.storage, args.jobs)
    table = Table(title=f"Optuna study {tune.name}: training cells only, mean of {tune.seeds} seeds")
    for column in ("trial", "state", "score", *tune.space):
        table.add_column(column, justify="right")
    for t in study.trials:
        score = "-" if t.value is None else f"{t.value:.3f}"
        table.add_row(str(t.number), t.state.name, score, *(_param_text(t.params.get(k)) for k in tune.space))
    console.print(table)
    best = tune_dir / BEST_FILE
    if best.exists():
        console.print(f"best config: {best}")


def _param_text(value: object) -> str:
    """A tuned value for a table: 4 significant digits for a float, as is otherwise."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


DESCRIPTION = (
    "Distributed actor-critic RL for UAV task offloading. The commands are listed below; "
    "`uavrl COMMAND --help` for each."
)


FORMATS = ("table", "markdown", "csv")
FORMAT_HELP = (
    "table: policies as rows, fitted to the terminal; markdown: cells x policies with CIs; csv: every row"
)

BOUND_HELP = (
    "paper: add the hindsight bound of the same evaluation episodes (an integer programme per "
    "episode, about 0.5 s each alone; the cells solved in parallel, one per core)"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default beside its help text, once: not where the help already says
    it, nor where there is none (None) or a flag is off."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from uavrl.envs.presets import DEFAULT_PRESET

    parser = argparse.ArgumentParser(prog="uavrl", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        formatter_class=HelpFormatter, name="train", help="train a model; writes a run directory"
    )
    train.add_argument("--config", help="YAML config file")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    train.add_argument(
        "--run-dir", help="run directory (default runs/<name>, or runs/<name>_2, _3... if it holds a run)"
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument(
        "--backend",
        choices=["serial", "process", "ray"],
        help="where workers run (runner.backend: in this process, one process each, or Ray actors)",
    )
    train.add_argument(
        "--address", help="a running Ray cluster to join (runner.ray_address; default: start Ray here)"
    )
    train.add_argument(
        "--learner-device",
        help="a3c_data and impala: where the learner's model and optimizer live (runner.learner_device: "
        "cpu, cuda, cuda:N); with --resume, moves a run's learner (its checkpoints load on any device)",
    )
    train.add_argument(
        "--actor-device",
        help="a3c_data and impala on backend serial or process: where the actors' forward passes run "
        "(runner.actor_device: cpu, cuda, cuda:N; their envs step on the CPU)",
    )
    train.add_argument(
        "--evaluate",
        action="store_true",
        help="print the evaluation table afterwards (references tuned, --bound solved, as the run trains)",
    )
    train.add_argument("--episodes", type=int, help="episodes per cell for --evaluate")
    train.add_argument("--bound", action="store_true", help=BOUND_HELP)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        formatter_class=HelpFormatter,
        name="evaluate",
        help="evaluate a run's final model(s) beside the reference policies",
    )
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes per cell")
    evaluate.add_argument("--cells", help="cell sets and/or names (default: the run's eval cells)")
    evaluate.add_argument("--csv", help="write the results table here")
    evaluate.add_argument("--format", choices=FORMATS, default="table", help=FORMAT_HELP)
    evaluate.add_argument(
        "--pool", choices=["shared", "private"], help="cloud pool regime (default: the run's training regime)"
    )
    evaluate.add_argument("--bound", action="store_true", help=BOUND_HELP)
    evaluate.set_defaults(func=cmd_evaluate)

    base = sub.add_parser(
        formatter_class=HelpFormatter,
        name="baselines",
        help="evaluate the reference policies over scenario cells",
    )
    _add_world_arguments(base, "environment preset", episodes=100)
    base.add_argument("--tune-episodes", type=int, default=100, help="episodes per cell per candidate")
    base.add_argument(
        "--config",
        help="paper: take the env params of this run config (reward scale, observation columns)",
    )
    base.add_argument(
        "--bound",
        action="store_true",
        help="paper: add the hindsight bound (an integer programme per episode)",
    )
    base.add_argument("--csv", help="write the results table here")
    base.add_argument("--format", choices=FORMATS, default="table", help=FORMAT_HELP)
    base.set_defaults(func=cmd_baselines)

    bound = sub.add_parser(
        formatter_class=HelpFormatter,
        name="bound",
        help="paper: the hindsight bound per cell (the best offline schedule of each episode)",
    )
    _add_world_arguments(bound, "environment preset (paper)", episodes=20)
    bound.add_argument("--csv", help="write the per-cell table here")
    bound.set_defaults(func=cmd_bound)

    pareto = sub.add_parser(
        formatter_class=HelpFormatter,
        name="pareto",
        help="mec: one policy per cost-weight vector, the learned front beside the references",
    )
    pareto.add_argument("--config", required=True, help="base run config of the mec preset")
    pareto.add_argument(
        "--weights",
        default="1,0.2,4,2;1,1,4,2;1,5,4,2",
        help="weight vectors (latency, energy, drop, discard), ';'-separated",
    )
    pareto.add_argument("--seeds", type=int, default=3, help="runs per weight vector")
    pareto.add_argument("--episodes", type=int, default=50, help="evaluation episodes per point")
    pareto.add_argument("--env-steps", type=int, help="training budget per run (default the config's)")
    pareto.add_argument("--run-dir", help="output directory (default runs/pareto_<config name>)")
    pareto.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a base value"
    )
    pareto.set_defaults(func=cmd_pareto)

    study = sub.add_parser(
        formatter_class=HelpFormatter,
        name="study",
        help="arms x ablation rows x seeds, then results.csv and report.md",
    )
    study.add_argument("--config", required=True, help="study YAML (configs/study_*.yaml)")
    study.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a study value"
    )
    study.add_argument("--run-dir", help="study directory (default runs/<name>)")
    study.add_argument(
        "--backend",
        choices=["process", "ray"],
        default="process",
        help="process: `parallel` runs at a time here; ray: every run a Ray task on the cluster",
    )
    study.add_argument("--address", help="with --backend ray: a Ray cluster to join (default: start Ray)")
    study.set_defaults(func=cmd_study)

    report = sub.add_parser(
        formatter_class=HelpFormatter,
        name="report",
        help="recompute results.csv and write report.md + figures",
    )
    report.add_argument("study_dir", help="a study directory written by `uavrl study`")
    report.add_argument(
        "--publish",
        metavar="DIR",
        help="also copy the small result files (results.csv, references, report.md, study.yaml, "
        "confirmatory.json) and a provenance.json of every run's config hash and commit to DIR "
        "(results/<study>, to commit)",
    )
    report.set_defaults(func=cmd_report)

    tune = sub.add_parser(
        formatter_class=HelpFormatter,
        name="tune",
        help="tune hyperparameters with Optuna (training cells only)",
    )
    tune.add_argument("--config", required=True, help="tuning YAML (configs/tune_*.yaml)")
    tune.add_argument("--trials", type=int, required=True, help="trials to run now (the study resumes)")
    tune.add_argument("--storage", help="Optuna storage URL (default sqlite:///<run-dir>/optuna.db)")
    tune.add_argument("--run-dir", help="tuning directory (default runs/<name>)")
    tune.add_argument("--jobs", type=int, default=1, help="trials run at once, one process each")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value")
    tune.set_defaults(func=cmd_tune)

    export = sub.add_parser(
        formatter_class=HelpFormatter,
        name="export",
        help="export a run's policy to ONNX for on-board inference",
    )
    export.add_argument("--run", required=True, help="run directory")
    export.add_argument(
        "--out", required=True, help="ONNX file to write (a JSON sidecar is written beside it)"
    )
    export.add_argument("--model", type=int, help="which model of an individual-learning run (default 0)")
    export.set_defaults(func=cmd_export)

    bench = sub.add_parser(formatter_class=HelpFormatter, name="bench", help="throughput benchmarks")
    bench.add_argument(
        "target",
        choices=["env", "train", "serial", "decide", "solve", "starts", "chaos"],
        help="env: env steps/s; train: training steps/s by workers x envs; serial: one study run's acting; "
        "decide: per-decision latency of --run's policy; solve: wall time to a solved task, "
        "uavrl's runners beside SB3; starts: the starting configs on every seed of the classic-control "
        "tasks of their kind; chaos: faults injected into short runs, and how they recover",
    )
    bench.add_argument("--run", help="decide: the run directory whose policy is timed")
    bench.add_argument("--config", help="serial: the run config (default configs/paper_a3c.yaml)")
    bench.add_argument("--preset", default=DEFAULT_PRESET, help="env and train: environment preset")
    bench.add_argument(
        "--seconds", type=float, default=None, help="time per measurement (default 2 for env, 24 otherwise)"
    )
    bench.add_argument("--workers", default="1,2", help="train: worker counts")
    bench.add_argument("--envs", default="1,8,32,64,128", help="train: envs per worker")
    bench.add_argument(
        "--env",
        default="CartPole-v1",
        help="solve: the task (CartPole-v1, or TaskGraph-v0: Dict observations, MultiBinary actions)",
    )
    bench.add_argument("--seeds", type=int, default=8, help="solve and starts: seeds per row")
    bench.add_argument(
        "--max-seconds", type=float, help="solve and starts: time limit of one run (default 180 and 1800)"
    )
    bench.add_argument("--no-sb3", action="store_true", help="solve: uavrl rows only")
    bench.add_argument("--kills", type=int, default=200, help="chaos: faults to inject in all")
    bench.add_argument(
        "--kinds",
        help="chaos: runner kinds, in turn (default a3c,individual,a3c_data,impala,a2c; on ray "
        "a3c,a3c_data,impala); starts: starting configs (all four unless given: "
        "discrete,discrete_gru,continuous,continuous_gru); train: the rows' runners (all five "
        "unless given: reference,a3c,a3c_data,impala,a2c)",
    )
    bench.add_argument(
        "--learner-device",
        default="cpu",
        help="train: learner devices of the a3c_data and impala rows, a row each (e.g. cpu,cuda)",
    )
    bench.add_argument(
        "--actor-device",
        default="cpu",
        help="train: devices of the a3c_data and impala rows' actors' forward passes, a row each "
        "with each learner device (e.g. cpu,cuda)",
    )
    bench.add_argument(
        "--inference",
        default="actors",
        help="train: where the a3c_data and impala rows' actors' forward passes run, a row each: actors "
        "(each its own), server (one process for all, runner.inference), or actors,server",
    )
    bench.add_argument(
        "--rounds", type=int, default=3, help="train: interleaved rounds per row (the median is reported)"
    )
    bench.add_argument(
        "--backend", choices=["process", "ray"], default="process", help="chaos: where the runs run"
    )
    bench.add_argument("--seed", type=int, default=0, help="chaos: seed of the faults' targets and instants")
    bench.add_argument("--csv", help="write the table here (solve: one row per run; chaos: one per trial)")
    bench.set_defaults(func=cmd_bench)
    return parser


def _check_positive(args: argparse.Namespace) -> None:
    for name in (
        "episodes",
        "tune_episodes",
        "seconds",
        "agents",
        "trials",
        "jobs",
        "seeds",
        "env_steps",
        "kills",
        "rounds",
    ):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        # `kill -USR1 PID` prints where every thread of a stuck run is
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    try:
        _check_positive(args)
        args.func(args)
    except (ConfigError, CheckpointError, OSError) as err:
        if args.debug:
            raise
        error_console.print(f"[red]{type(err).__name__}:[/red] {err}", soft_wrap=True)
        return 2
    except RunInterrupted as err:
        error_console.print(str(err))
        return 130
    except KeyboardInterrupt:
        error_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
