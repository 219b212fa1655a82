"""The typed run configuration: YAML in, validated, YAML out.

It sits at the package root, beside ``errors``, because every layer from ``runners`` rightwards
reads its own section. Unknown keys and bad values raise :class:`~uavrl.errors.ConfigError`
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict

from uavrl.envs.presets import DEFAULT_PRESET, ENV_ID, PRESETS, hash_neutral_params
from uavrl.errors import ConfigError

if typing.TYPE_CHECKING:
    from uavrl.envs.preset import Preset

HASH_NEUTRAL: JsonDict = {"hash_neutral": True}
"""``json_schema_extra`` of a field added after run directories existed: at its default it is
left out of the config hash, so adding an option never changes the identity of existing runs
(a study resumes them instead of training them again)."""


# Worker processes per core that a config may start without runner.allow_many_processes.
MAX_PROCESSES_PER_CORE = 8


def content_hash(section: BaseModel, replace: dict[str, Any] | None = None) -> str:
    """Identity of a resolved config section (12 hex digits of a SHA-256 of its sorted JSON,
    hash-neutral fields at their default left out); ``replace`` sets fields' identities (a run
    config held as a dict: :func:`run_config_identity`)."""
    text = json.dumps({**_identity(section), **(replace or {})}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_config_identity(data: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run config held as a dict (a study's base): its resolved fields, less
    the hash-neutral ones at their default, so adding an option does not change a study's hash."""
    return _identity(config_from_dict(data))


def _absent_fields_identity(fields: dict[str, FieldInfo]) -> dict[str, Any]:
    """The identity of fields a section does not have: the hash-relevant ones, at their
    defaults (the hash-neutral ones at their defaults are left out of every identity)."""
    return {k: f.default for k, f in fields.items() if f.json_schema_extra != HASH_NEUTRAL}


def _identity(section: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = section.model_dump(mode="json")
    if isinstance(section, RunnerCommon):
        # runs were recorded with one runner section for every kind, serial and backend two
        # fields: their identity keeps that form (another kind's fields at their defaults)
        data["serial"] = section.backend == "serial"
        data["backend"] = "process" if section.backend == "serial" else section.backend
        data.update(_absent_fields_identity({k: f for k, f in _KIND_FIELDS.items() if k not in data}))
    if isinstance(section, GymEnv):  # recorded with every env field: the others at their defaults
        data.update(_absent_fields_identity(_UAVRL_ENV_FIELDS))
    if isinstance(section, UavrlEnv):
        neutral = hash_neutral_params(section.preset)
        data["params"] = {k: v for k, v in data["params"].items() if k not in neutral or v != neutral[k]}
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            data[name] = _identity(value)
        elif field.json_schema_extra == HASH_NEUTRAL and value == field.get_default(
            call_default_factory=True
        ):
            del data[name]
    return data


class ConfigSection(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated, a
    number is finite (inf and NaN are refused as NaN was), and a boolean is not a number
    (``runner.n_workers: true`` is refused, not read as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and _is_number_field(field.annotation):
                    raise ValueError(f"{name} must be a number, got {value!r} (true/false)")
        return data


def _is_number_field(annotation: Any) -> bool:
    """An int or float field (optional or not), not a bool one."""
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (Union, types.UnionType)
        else (annotation,)
    )
    return (
        bool(options)
        and all(o in (int, float, type(None)) for o in options)
        and (int in options or float in options)
    )


def _drop_fields_of_other_variants(
    data: Any, own: dict[str, FieldInfo], others: dict[str, FieldInfo], refuse: Callable[[str, Any], str]
) -> Any:
    """A section's input without the fields of its other variants: at their defaults they are
    dropped (run directories written before the variants were split hold every field), set
    otherwise they are refused with ``refuse(name, value)``."""
    if not isinstance(data, dict):
        return data
    kept = {}
    for name, value in data.items():
        other = others.get(name)
        if name in own or other is None:
            kept[name] = value
        elif value != other.default:
            raise ValueError(refuse(name, value))
    return kept


class EnvCommon(ConfigSection):
    """Which environment the workers step: :class:`UavrlEnv` for uavrl's own env
    (``uavrl/Offload-v0``, its presets and scenario cells), :class:`GymEnv` for any other
    Gymnasium id, told apart by ``id``. ``params`` are the env's keyword arguments."""

    id: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def preset(self) -> str | None:
        """The uavrl preset (``paper``, ``mec``), or None for any other env."""
        return None

    def worker_params(self, worker_id: int, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """Env parameters of worker ``worker_id``: the base params (default ``params``), plus its
        scenario cell where it has one."""
        return dict(self.params if base is None else base)

    @property
    def uavrl_preset(self) -> Preset | None:
        """The preset this env runs (:class:`~uavrl.envs.preset.Preset`: its cells, regimes,
        references and evaluation), or None for any other Gymnasium env."""
        from uavrl.envs.preset import get_preset

        return None if self.preset is None else get_preset(self.preset)

    @property
    def cell_preset(self) -> Preset:
        """:attr:`uavrl_preset` where scenario cells are named (an env without a preset has none)."""
        preset = self.uavrl_preset
        if preset is None:
            raise ConfigError(f"{self.id!r} has no scenario cells: cells apply to {ENV_ID} presets")
        return preset


class UavrlEnv(EnvCommon):
    """uavrl's own env, ``uavrl/Offload-v0``: ``params`` are preset parameters (``preset``,
    ``reward_scale``...; unset, ``{"preset": "paper"}``).

    ``worker_cells`` puts worker ``i`` in scenario cell ``i`` (cell names, or one name for all);
    ``cells_by: copy`` puts copy ``j`` of worker ``i`` in cell ``(i + j) mod n`` instead, so each
    worker steps every cell (individual learning on all training cells) while each pool still
    holds one agent of every cell; the cells must then share their cloud capacity,
    and ``shared_pool`` attaches every worker to one cross-process cloud pool. ``team_reward``
    (with ``shared_pool``) rewards each worker's copy ``j`` with the mean reward of copy ``j`` of
    all workers, the agents on its pool: the score of a shared world. It needs the workers
    stepped together in one process (``runner.backend: serial`` or ``a2c``). ``team_spirit`` (OpenAI
    Five's name) blends the two: each agent gets ``(1 - team_spirit) * own + team_spirit *
    pool mean``; 1 is the pure team reward, lower values trade alignment for less noise from
    the pool mates' rewards.

    ``pool_price`` (with ``shared_pool``, instead of ``team_reward``) is the other way to align
    an agent with its pool mates: a congestion price. Every task an agent places on the cloud
    costs it ``pool_price * reward_scale * units * T_q`` at placement, the pool capacity it
    holds (unit-steps) at a fixed price, so the units it keeps its pool mates from are charged
    to it, and its own reward stays free of their noise. It shapes the training reward only:
    evaluations score the environment's own returns.
    """

    id: Literal["uavrl/Offload-v0"] = "uavrl/Offload-v0"
    worker_cells: list[str] | None = None
    cells_by: Literal["worker", "copy"] = Field("worker", json_schema_extra=HASH_NEUTRAL)
    shared_pool: bool = False
    team_reward: bool = False
    team_spirit: float = Field(1.0, ge=0.0, le=1.0, json_schema_extra=HASH_NEUTRAL)
    pool_price: float = Field(0.0, ge=0.0, json_schema_extra=HASH_NEUTRAL)

    @model_validator(mode="before")
    @classmethod
    def _preset_by_default(cls, data: Any) -> Any:
        """Unset ``params`` are ``{"preset": "paper"}``."""
        if isinstance(data, dict) and "params" not in data:
            data = {**data, "params": {"preset": DEFAULT_PRESET}}
        return data

    @property
    def preset(self) -> str:
        return str(self.params.get("preset", DEFAULT_PRESET))

    def worker_params(self, worker_id: int, base: dict[str, Any] | None = None) -> dict[str, Any]:
        params = super().worker_params(worker_id, base)
        if self.worker_cells:
            cells = self.worker_cells
            name = cells[worker_id] if len(cells) > 1 else cells[0]
            params.update(self.cell_preset.resolve_cells(name)[0].env_params())
        return params


class GymEnv(EnvCommon):
    """Any other Gymnasium id, including ``"module:EnvName-v0"`` for a user's own env, or the
    import path of a callable that makes one env (``"module:make_env"``, called with
    ``params``: :func:`~uavrl.envs.vector.env_maker`). It has no scenario cells, cloud pools or
    pool rewards: the fields of :class:`UavrlEnv` are refused (at their defaults, dropped)."""

    @model_validator(mode="before")
    @classmethod
    def _no_uavrl_fields(cls, data: Any) -> Any:
        def refuse(name: str, value: Any) -> str:
            return (
                f"env.{name}={value!r} is only for {ENV_ID} presets {' and '.join(PRESETS)}, "
                f"not {data.get('id')!r}; remove it"
            )

        return _drop_fields_of_other_variants(data, cls.model_fields, _UAVRL_ENV_FIELDS, refuse)

    # what UavrlEnv's fields are here: no cells, no pool
    worker_cells: ClassVar[None] = None
    cells_by: ClassVar[Literal["worker"]] = "worker"
    shared_pool: ClassVar[bool] = False
    team_reward: ClassVar[bool] = False
    team_spirit: ClassVar[float] = 1.0
    pool_price: ClassVar[float] = 0.0


assert UavrlEnv.model_fields["id"].default == ENV_ID
_UAVRL_ENV_FIELDS = {k: f for k, f in UavrlEnv.model_fields.items() if k not in EnvCommon.model_fields}


UAVRL_TAG, GYM_TAG = "uavrl", "gym"  # the env section's two classes, as its union tags them


def _env_variant(data: Any) -> Any:
    env_id = data.get("id", ENV_ID) if isinstance(data, dict) else getattr(data, "id", None)
    return UAVRL_TAG if env_id == ENV_ID else GYM_TAG


EnvConfig = Annotated[
    Annotated[UavrlEnv, Tag(UAVRL_TAG)] | Annotated[GymEnv, Tag(GYM_TAG)], Discriminator(_env_variant)
]
"""The env section: :class:`UavrlEnv` for ``uavrl/Offload-v0`` (the default), else :class:`GymEnv`."""


class ModelConfig(ConfigSection):
    """The actor-critic architecture.

    ``central_critic`` (shared pools, workers stepped together: ``runner.backend: serial`` or ``a2c``)
    gives the value function its own network over the whole world's state: every pool mate's
    observation, their channels and the pool level
    (:class:`~uavrl.envs.vector.TeamStateObservations`). The policy still acts on the agent's
    own observation alone.

    ``privileged_critic`` (a uavrl preset, any runner and pool) gives the value function its
    own network over the observation and the agent's hidden state: for `paper` the channel,
    its pool's level and its cloud slots; for `mec` shadowing, blockage, cloud load and tasks
    (:class:`~uavrl.envs.vector.HiddenStateObservations`). The deployed policy is unchanged:
    only the training targets see more. With ``central_critic`` as well, the team state holds
    every pool mate's observation with its hidden state.

    ``separate_critic`` gives the value function its own feed-forward network over the
    observation, so the value loss never moves the policy's layers (implied by either critic
    above). A recurrent model's critic then has no memory.

    ``predict_hidden`` (with ``privileged_critic``) adds an auxiliary head that predicts the
    agent's hidden state from the policy's core features, trained with weight
    ``algo.hidden_coef``: the features, and a GRU's memory, are pushed to carry what the agent
    cannot observe. The deployed policy reads the same columns and never the head.

    ``belief`` (with ``predict_hidden`` and a GRU) moves that prediction into a belief network
    of its own (a second GRU over the agent's observation, trained by the prediction loss
    alone), and the policy reads its prediction, without gradient, beside the observation: the
    memory is learnt by supervision instead of through the policy gradient. The deployed policy
    carries the belief network (it reads only observable columns); its state doubles.
    """

    hidden_size: int = Field(128, ge=1)
    recurrent: bool = True
    layer_norm: bool = True
    squash: Literal["clip", "tanh"] = "clip"
    central_critic: bool = Field(False, json_schema_extra=HASH_NEUTRAL)
    privileged_critic: bool = Field(False, json_schema_extra=HASH_NEUTRAL)
    separate_critic: bool = Field(False, json_schema_extra=HASH_NEUTRAL)
    predict_hidden: bool = Field(False, json_schema_extra=HASH_NEUTRAL)
    belief: bool = Field(False, json_schema_extra=HASH_NEUTRAL)


class AlgoConfig(ConfigSection):
    """Actor-critic hyperparameters.

    ``targets`` names the value targets and advantages, whatever the runner: ``nstep`` returns,
    ``gae`` (GAE(``gae_lambda``)) or ``vtrace`` (V-trace with ``rho_bar`` and ``c_bar``, which
    corrects rollouts acted by older weights; on-policy it equals ``nstep``). Unset: ``vtrace``
    for ``impala``, else ``gae`` with a ``gae_lambda`` and ``nstep`` without. ``lr_schedule =
    "linear"`` decays the learning
    rate to 0 over ``runner.total_env_steps`` (counted over all workers);
    ``entropy_schedule = "linear"`` decays ``entropy_coef`` to ``entropy_coef_final`` over the
    same steps (the policy that collects data then approaches the greedy one it is judged as).
    ``normalize_rewards``
    divides rewards by a running std of the discounted return before they reach the loss
    (logged episode returns stay raw). ``hidden_coef`` weighs the hidden-state prediction loss
    of a model with ``model.predict_hidden``.
    """

    gamma: float = Field(0.99, ge=0.0, le=1.0)
    targets: Literal["nstep", "gae", "vtrace"] | None = Field(None, json_schema_extra=HASH_NEUTRAL)
    gae_lambda: float | None = Field(None, ge=0.0, le=1.0)
    lr: float = Field(1e-4, gt=0.0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    adam_eps: float = Field(1e-8, gt=0.0)
    entropy_coef: float = Field(0.05, ge=0.0)
    entropy_schedule: Literal["constant", "linear"] = Field("constant", json_schema_extra=HASH_NEUTRAL)
    entropy_coef_final: float = Field(0.0, ge=0.0, json_schema_extra=HASH_NEUTRAL)
    value_coef: float = Field(0.25, ge=0.0)
    max_grad_norm: float = Field(40.0, gt=0.0)
    rollout_length: int = Field(20, ge=1)
    normalize_advantages: bool = False
    normalize_rewards: bool = False
    rho_bar: float = Field(1.0, gt=0.0, json_schema_extra=HASH_NEUTRAL)
    c_bar: float = Field(1.0, gt=0.0, json_schema_extra=HASH_NEUTRAL)
    hidden_coef: float = Field(0.5, ge=0.0, json_schema_extra=HASH_NEUTRAL)


class RunnerCommon(ConfigSection):
    """How experience and gradients flow: the fields of every runner kind (one class per kind
    below, told apart by ``kind``; each holds only the fields that apply to it).

    ``kind``: ``a3c`` (:class:`A3CRunner`: Hogwild workers, one shared model, or one model per
    worker: individual learning), ``a2c`` (:class:`A2CRunner`: every worker's envs in one
    process, one synchronous update), ``a3c_data`` (:class:`A3CDataRunner`) and ``impala``
    (:class:`ImpalaRunner`): N actors send rollouts to one learner. ``total_env_steps`` counts
    all workers; each worker gets an equal share.

    ``backend``: where the workers (actors) run. ``serial``: in this process, stepped as one
    batch (the in-process transport: the same roles and loop, for tests, debugging and small
    runs); ``process``: one supervised process each; ``ray`` runs ``a3c``, ``a3c_data`` and
    ``impala`` as Ray actors (one learner, N rollout actors), on this machine or on the cluster
    at ``ray_address``. A worker process or Ray actor that dies is restarted up to
    ``max_restarts`` times; a worker or actor process silent for ``heartbeat_timeout_s``
    (stopped, stuck) is killed and restarted the same way.
    """

    kind: str
    n_workers: int = Field(2, ge=1)
    envs_per_worker: int = Field(1, ge=1)
    total_env_steps: int = Field(100_000, ge=1)
    checkpoint_every: int = Field(500, ge=1, description="global updates between checkpoints")
    max_nonfinite: int = Field(10, ge=1, description="non-finite updates in a row before stopping")
    max_restarts: int = Field(
        3, ge=0, description="restarts of a worker process that dies", json_schema_extra=HASH_NEUTRAL
    )
    heartbeat_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="seconds a worker or actor process may go without a sign of life before it is "
        "killed and restarted (its start-up: at least 300 s)",
        json_schema_extra=HASH_NEUTRAL,
    )
    backend: Literal["serial", "process", "ray"] = "process"
    ray_address: str | None = Field(None, json_schema_extra=HASH_NEUTRAL)
    allow_many_processes: bool = Field(
        False,
        description="start more than MAX_PROCESSES_PER_CORE worker processes per core",
        json_schema_extra=HASH_NEUTRAL,
    )

    @model_validator(mode="before")
    @classmethod
    def _serial_is_a_backend(cls, data: Any) -> Any:
        """``serial: true``, the field ``backend: serial`` replaced, still reads (the run
        directories and checkpoints written before hold it): true is ``backend: serial``, false
        over a ``serial`` backend is ``process``."""
        if not isinstance(data, dict) or "serial" not in data:
            return data
        data = dict(data)
        serial, backend = data.pop("serial"), data.get("backend", "process")
        if serial is True:
            if backend == "ray":
                raise ValueError(
                    "runner.backend: ray does not run runner.serial: True (serial runs in one process)"
                )
            data["backend"] = "serial"
        elif serial is False and backend == "serial":
            data["backend"] = "process"  # runner.serial=false given over a serial config: not serial
        elif serial is not False:
            raise ValueError(
                f"runner.serial must be true or false (now runner.backend: serial), got {serial!r}"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _only_this_kinds_fields(cls, data: Any) -> Any:
        """A field of another kind is refused, naming the kinds it applies to."""

        def refuse(name: str, value: Any) -> str:
            field = _KIND_FIELDS[name]
            kinds = " and ".join(k for k, variant in RUNNER_KINDS.items() if name in variant.model_fields)
            why = f" {field.description}:" if field.description else ""
            return (
                f"runner.{name}={value!r}{why} it applies to runner.kind {kinds}, and runner.kind "
                f"is {data.get('kind', DEFAULT_KIND)}; remove it"
            )

        return _drop_fields_of_other_variants(data, cls.model_fields, _KIND_FIELDS, refuse)

    @property
    def serial(self) -> bool:
        """The workers run in this process (``backend: serial``)."""
        return self.backend == "serial"

    @property
    def learns_on(self) -> str:
        """Where the learner's model and optimizer live: ``cpu``, but for a kind with a
        ``learner_device``."""
        return "cpu"

    @property
    def acts_on(self) -> str:
        """Where actors run their forward passes: ``cpu``, but for a kind with an
        ``actor_device``."""
        return "cpu"

    @property
    def served(self) -> bool:
        """An inference server runs the actors' forward passes (``inference: server``)."""
        return False


class _OneModel:
    """A kind with one model for every worker (every kind but ``a3c``, where ``share`` is a
    field)."""

    @property
    def share(self) -> bool:
        return True


class A3CRunner(RunnerCommon):
    """``a3c``: N Hogwild workers. ``share = True`` is A3C (one shared model and SharedAdam),
    ``share = False`` individual learning (one model per worker, same worker code).
    ``lock_updates`` serialises the optimizer steps on a shared model. On ``backend: ray`` its
    workers send gradients to a learner, which drops those more than ``max_grad_staleness``
    (default N) versions old."""

    kind: Literal["a3c"] = "a3c"
    share: bool = Field(True, description="(false: individual learning) gives each worker a model")
    lock_updates: bool = Field(True, description="serialises the optimizer steps of Hogwild workers")
    max_grad_staleness: int | None = Field(
        None, ge=0, description="drops the stale gradients of a3c's rollout actors on Ray"
    )


class A2CRunner(_OneModel, RunnerCommon):
    """``a2c``: every worker's envs step together in this process, one synchronous update per
    rollout (``backend`` is where its evaluations and checkpoints run: this process)."""

    kind: Literal["a2c"] = "a2c"


TORCH_DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


class _CentralLearnerRunner(_OneModel, RunnerCommon):
    """A kind whose actors feed one learner, which may live on an accelerator:
    ``learner_device`` (``cpu``, ``cuda`` or ``cuda:N``) holds its model and optimizer.
    ``actor_device`` is where the actors' copies of its weights act (one forward per env step);
    their envs always step on the CPU and their rollouts reach the learner through host memory.
    ``inference: server`` (process backend) gives those forward passes to one inference server
    process on ``actor_device``, which answers every waiting actor in one batch."""

    learner_device: str = Field(
        "cpu",
        description="puts the learner's model and optimizer on a device",
        json_schema_extra=HASH_NEUTRAL,
    )
    actor_device: str = Field(
        "cpu",
        description="puts the actors' forward passes on a device",
        json_schema_extra=HASH_NEUTRAL,
    )
    inference: Literal["actors", "server"] = Field(
        "actors",
        description="runs every process actor's forward pass in one batch in a server process",
        json_schema_extra=HASH_NEUTRAL,
    )

    @field_validator("learner_device", "actor_device")
    @classmethod
    def _a_torch_device(cls, value: str) -> str:
        if not TORCH_DEVICE_PATTERN.fullmatch(value):
            raise ValueError("one of cpu, cuda or cuda:N (N a GPU index)")
        return value

    @property
    def learns_on(self) -> str:
        return self.learner_device

    @property
    def acts_on(self) -> str:
        return self.actor_device

    @property
    def served(self) -> bool:
        return self.inference == "server"

    @model_validator(mode="after")
    def _served_by_processes(self) -> _CentralLearnerRunner:
        if self.served and self.serial:
            raise ValueError(
                "runner.inference: server serves process actors; runner.backend: serial acts for "
                "every actor in one forward pass already (use backend process)"
            )
        return self


class A3CDataRunner(_CentralLearnerRunner):
    """``a3c_data``: every update takes one rollout from each of the N actors, and an actor
    waits for the weights of the update it fed before acting again: every rollout is
    on-policy."""

    kind: Literal["a3c_data"] = "a3c_data"


class ImpalaRunner(_CentralLearnerRunner):
    """``impala``: actors never wait for the learner, which updates on ``learner_batch``
    rollouts at a time (default N) and corrects their lag with V-trace (``algo.rho_bar``,
    ``algo.c_bar``); a process actor may hold ``rollout_slots`` rollouts unread.
    ``replay_size > 0`` gives the learner a replay of its latest ``replay_size`` rollouts, from
    which every update adds ``replay_ratio`` replayed rollouts per fresh one (1: half of each
    batch replayed); V-trace corrects their age. A resumed or restarted learner starts with an
    empty replay."""

    kind: Literal["impala"] = "impala"
    learner_batch: int | None = Field(
        None,
        ge=1,
        description="sets the rollouts of an update (a3c_data's take one from every actor)",
        json_schema_extra=HASH_NEUTRAL,
    )
    rollout_slots: int = Field(
        2, ge=1, description="lets an actor run ahead of the learner", json_schema_extra=HASH_NEUTRAL
    )
    replay_size: int = Field(
        0,
        ge=0,
        description="replays old rollouts, which only V-trace corrects",
        json_schema_extra=HASH_NEUTRAL,
    )
    replay_ratio: float = Field(
        1.0, gt=0.0, description="sets the replayed rollouts per fresh one", json_schema_extra=HASH_NEUTRAL
    )


DEFAULT_KIND = "a3c"
RUNNER_KINDS: dict[str, type[RunnerCommon]] = {
    "a3c": A3CRunner,
    "a2c": A2CRunner,
    "a3c_data": A3CDataRunner,
    "impala": ImpalaRunner,
}
# every field that belongs to some kinds only -> its definition
_KIND_FIELDS = {
    name: field
    for variant in RUNNER_KINDS.values()
    for name, field in variant.model_fields.items()
    if name not in RunnerCommon.model_fields
}


def _runner_kind(data: Any) -> Any:
    return data.get("kind", DEFAULT_KIND) if isinstance(data, dict) else getattr(data, "kind", None)


RunnerConfig = Annotated[
    Annotated[A3CRunner, Tag("a3c")]
    | Annotated[A2CRunner, Tag("a2c")]
    | Annotated[A3CDataRunner, Tag("a3c_data")]
    | Annotated[ImpalaRunner, Tag("impala")],
    Discriminator(
        _runner_kind,
        custom_error_type="runner_kind",
        custom_error_message=f"runner.kind must be one of {', '.join(RUNNER_KINDS)}",
    ),
]
"""The runner section: one of the kinds' classes, chosen by ``kind`` (default ``a3c``)."""
RUNNER_ADAPTER: TypeAdapter[RunnerConfig] = TypeAdapter(RunnerConfig)


class EvalConfig(ConfigSection):
    """Greedy evaluation of the final model(s), written to ``summary.json``, and during training.

    ``every_env_steps`` evaluates a snapshot of the model(s) greedily every so many run-wide env
    steps, ``periodic_episodes`` episodes per evaluation world, always on the same seeded streams
    (``seed``, common random numbers across evaluations), into ``eval_log.csv``, TensorBoard and
    the progress line. ``stop_at_return`` ends the run at the first evaluation whose mean
    return reaches it; ``summary.json`` records its step and wall time.
    """

    episodes: int = Field(100, ge=1)
    seed: int = Field(10_000, ge=0)
    cells: list[str] | None = None
    every_env_steps: int | None = Field(None, ge=1, json_schema_extra=HASH_NEUTRAL)
    periodic_episodes: int = Field(10, ge=1, json_schema_extra=HASH_NEUTRAL)
    stop_at_return: float | None = Field(None, json_schema_extra=HASH_NEUTRAL)

    @model_validator(mode="after")
    def _stop_needs_evaluations(self) -> EvalConfig:
        if self.stop_at_return is not None and self.every_env_steps is None:
            raise ValueError("eval.stop_at_return needs eval.every_env_steps (evaluations to check it on)")
        return self


class LogConfig(ConfigSection):
    tensorboard: bool = True
    progress: bool = True


class Config(ConfigSection):
    name: str = "run"
    seed: int = Field(0, ge=0)
    env: EnvConfig = Field(default_factory=UavrlEnv)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    runner: RunnerConfig = Field(default_factory=A3CRunner)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @property
    def worker_processes(self) -> int:
        """Processes that step workers in a run of this config (1 when they step in one)."""
        r = self.runner
        return 1 if r.serial or r.kind == "a2c" else r.n_workers

    def _check_process_count(self) -> None:
        """A process per worker far beyond the cores is a typo more often than a plan (1000
        workers start 250 processes and 11 GB within 20 s): it needs an explicit flag."""
        r = self.runner
        processes = self.worker_processes
        cores = os.cpu_count() or 1
        if processes > MAX_PROCESSES_PER_CORE * cores and not r.allow_many_processes:
            raise ValueError(
                f"runner.n_workers={r.n_workers} starts {processes} worker processes on {cores} cores "
                f"(more than {MAX_PROCESSES_PER_CORE} per core); use fewer workers, runner.backend: serial, "
                "or set runner.allow_many_processes: true"
            )

    @property
    def targets(self) -> Literal["nstep", "gae", "vtrace"]:
        """The loss's targets (``algo.targets``, or the runner's default when it is unset)."""
        if self.algo.targets is not None:
            return self.algo.targets
        if self.runner.kind == "impala":
            return "vtrace"
        return "nstep" if self.algo.gae_lambda is None else "gae"

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        cells = self.env.worker_cells
        preset = self.env.uavrl_preset
        if cells is not None:
            assert preset is not None  # cells are a field of UavrlEnv alone
            if len(cells) not in (1, self.runner.n_workers):
                raise ValueError(
                    f"env.worker_cells must name 1 or runner.n_workers={self.runner.n_workers} "
                    f"cells, got {len(cells)}"
                )
            resolved = _check_cells("env.worker_cells", cells, preset)
            if self.env.cells_by == "copy":
                if not preset.copy_cells_share:
                    raise ValueError(
                        f"env.cells_by=copy is only for the {_presets_with('copy_cells_share')} preset"
                    )
                for name in preset.copy_cells_share:
                    values = {cell.env_params()[name] for cell in resolved}
                    if len(values) > 1:
                        raise ValueError(
                            f"env.cells_by=copy steps every cell in one core, with one "
                            f"{name.replace('_', ' ')}; env.worker_cells has {sorted(values)}"
                        )
            overridden = {k: v for k, v in self.env.params.items() if k in preset.cell_params}
            if overridden:
                given = ", ".join(f"env.params.{k}={v!r}" for k, v in overridden.items())
                raise ValueError(
                    f"{given} would be overridden by env.worker_cells (each cell sets "
                    f"{', '.join(preset.cell_params)}); remove it, or drop env.worker_cells"
                )
        elif self.env.cells_by != "worker":
            raise ValueError(f"env.cells_by={self.env.cells_by!r} needs env.worker_cells")
        if self.eval.cells is not None:
            if preset is None:
                raise ValueError(
                    f"eval.cells is only for {ENV_ID} presets {' and '.join(PRESETS)}, not {self.env.id!r}"
                )
            _check_cells("eval.cells", self.eval.cells, preset)
        if self.env.shared_pool and not (preset is not None and preset.pools_across_workers):
            raise ValueError(
                f"env.shared_pool is only for {ENV_ID} preset {_presets_with('pools_across_workers')}"
            )
        if self.model.predict_hidden and not self.model.privileged_critic:
            raise ValueError(
                "model.predict_hidden: true predicts the hidden state that model.privileged_critic "
                "adds to the training observation; set model.privileged_critic: true as well"
            )
        if self.model.belief and not (self.model.predict_hidden and self.model.recurrent):
            raise ValueError(
                "model.belief: true feeds the policy a GRU's prediction of the hidden state; set "
                f"model.predict_hidden: true and model.recurrent: true (got predict_hidden="
                f"{self.model.predict_hidden}, recurrent={self.model.recurrent})"
            )
        targets, gae_lambda = self.algo.targets, self.algo.gae_lambda
        if targets == "gae" and gae_lambda is None:
            raise ValueError("algo.targets: gae needs algo.gae_lambda (a number in [0, 1])")
        if targets in ("nstep", "vtrace") and gae_lambda is not None:
            raise ValueError(
                f"algo.gae_lambda={gae_lambda} applies to algo.targets: gae only, not {targets!r}; "
                "set algo.gae_lambda: null"
            )
        if self.runner.kind == "impala" and targets is None and gae_lambda is not None:
            raise ValueError(
                f"algo.gae_lambda={gae_lambda} does not apply to runner.kind: impala, whose targets "
                "are V-trace (algo.c_bar plays lambda's part); set algo.gae_lambda: null, or "
                "algo.targets: gae for uncorrected GAE on its lagging rollouts"
            )
        r = self.runner
        if isinstance(r, ImpalaRunner) and r.learner_batch is not None and r.learner_batch > r.n_workers:
            raise ValueError(
                f"runner.learner_batch={r.learner_batch} must be at most "
                f"runner.n_workers={r.n_workers} (rollouts per learner update)"
            )
        if r.backend == "ray":
            refused = (
                ("runner.kind", r.kind, r.kind == "a2c", "a2c is one process; use kind a3c_data"),
                ("runner.share", r.share, not r.share, "individual learning runs on processes"),
                ("env.shared_pool", True, self.env.shared_pool, "the pool is in shared memory"),
                (
                    "runner.learner_device",
                    r.learns_on,
                    r.learns_on.startswith("cuda:"),
                    "Ray gives the learner actor one GPU of its node; use cuda",
                ),
                (
                    "runner.actor_device",
                    r.acts_on,
                    r.acts_on != "cpu",
                    "its rollout actors ask Ray for CPUs only; use backend process",
                ),
                ("runner.inference", "server", r.served, "its rollout actors act themselves; use process"),
            )
            for option, value, bad, why in refused:
                if bad:
                    raise ValueError(f"runner.backend: ray does not run {option}: {value} ({why})")
        elif isinstance(r, A3CRunner) and r.max_grad_staleness is not None:
            raise ValueError("runner.max_grad_staleness applies to runner.backend: ray (its a3c learner)")
        else:
            self._check_process_count()
        if self.env.team_spirit != 1.0 and not self.env.team_reward:
            raise ValueError(
                f"env.team_spirit={self.env.team_spirit} only applies with env.team_reward: true"
            )
        if self.env.pool_price > 0:
            if not self.env.shared_pool:
                raise ValueError(
                    f"env.pool_price={self.env.pool_price} prices a shared cloud pool: it needs "
                    f"{ENV_ID} preset {_presets_with('pools_across_workers')} with env.shared_pool: true"
                )
            if self.env.team_reward:
                raise ValueError(
                    f"env.pool_price={self.env.pool_price} and env.team_reward are two ways to align "
                    "pool mates; choose one (set env.pool_price: 0 or env.team_reward: false)"
                )
        # both act on the N agents of one pool at each step, so the workers must step together
        pool_mates = (
            ("env.team_reward", self.env.team_reward, "it averages over pool mates"),
            ("model.central_critic", self.model.central_critic, "it sees a pool's world"),
        )
        for option, enabled, why in pool_mates:
            if not enabled:
                continue
            if not self.env.shared_pool:
                raise ValueError(f"{option} needs env.shared_pool: true ({why})")
            if not (self.runner.serial or self.runner.kind == "a2c"):
                raise ValueError(
                    f"{option} needs the workers stepped together: runner.backend: serial (runner.serial: "
                    f"true) or runner.kind: a2c, got runner.kind: {self.runner.kind} with runner.serial: "
                    f"false (runner.backend: {self.runner.backend})"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        return content_hash(self)


def _check_cells(field: str, names: list[str], preset: Preset) -> list[Any]:
    """The cells ``names`` of ``preset``'s grid; a bad name is refused under ``field``."""
    try:
        return preset.resolve_cells(names)
    except ConfigError as err:
        raise ValueError(f"{field}: {err}") from None


def _presets_with(capability: str) -> str:
    """The presets that have ``capability`` (:func:`~uavrl.envs.preset.presets_with`), joined."""
    from uavrl.envs.preset import presets_with

    return " and ".join(presets_with(capability))


_VARIANT_TAGS = {"runner": set(RUNNER_KINDS), "env": {UAVRL_TAG, GYM_TAG}}  # the sections' union tags


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        message = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a check across fields: its message names them
            lines.append(message)
            continue
        loc = list(e["loc"])
        if len(loc) > 1 and loc[1] in _VARIANT_TAGS.get(str(loc[0]), ()):
            del loc[1]  # the section's class, chosen by runner.kind or env.id
        field = ".".join(str(p) for p in loc)
        if message.startswith(f"{field}."):  # a refusal that names its field
            lines.append(message)
            continue
        value = e.get("input")
        if e["type"] == "runner_kind":
            value = value.get("kind")
        shown = "" if isinstance(value, dict) else f", got {value!r}"
        lines.append(f"{field}: {message}{shown}")
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); a missing file or another type is refused."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, dict | None):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
    return loaded or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply ``--set`` overrides, validate. An empty file
    is refused: it would silently train the built-in defaults."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, "config file")
        if not data:
            raise ConfigError(
                f"config file {str(path)!r} is empty; name at least the settings you mean "
                "(configs/paper_a3c.yaml is a complete example)"
            )
        data.pop("meta", None)  # run directories add provenance under this key
    return config_from_dict(apply_overrides(data, overrides or []))


def read_with_base(path: str | Path, overrides: list[str] | None, what: str) -> dict[str, Any]:
    """A YAML mapping (a study or tuning config) whose ``base`` may be the path of a run config,
    relative to the file, with ``base_set`` (``--set`` strings) applied to it; then ``overrides``."""
    path = Path(path)
    data = read_yaml_mapping(path, what)
    if isinstance(data.get("base"), str):
        base = load_config(path.parent / data["base"]).to_dict()
        data["base"] = apply_overrides(base, data.pop("base_set", None) or [])
    return apply_overrides(data, overrides or [])
