"""Central inference for process actors (``runner.inference: server``).

One process, the inference server, holds the policy on ``runner.actor_device`` and answers every
actor waiting on it with one forward pass over all their envs; an actor only steps its envs and
samples its actions (SEED RL's central inference, Sample Factory's policy worker). On an
accelerator this turns N small forward passes per env step into one large one.

Each actor has a slot of shared tensors (its K observations and hidden states in, the policy's
parameters, values and new hidden states out) and two pipes: a request (a sequence number) to
the server, the reply (the same number) back. The server keeps no state of its own, the hidden
state travels with each request, so a server that dies is started again like any actor, and an
actor that sees a new server incarnation while it waits sends its request again (a reply whose
number is not the one it waits for is dropped; the slot always holds the latest request, so a
request answered twice is answered the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import torch

from uavrl.config import Config
from uavrl.nn.models import ActorCritic, clone_model, model_device
from uavrl.runners.device import CPU, actor_device
from uavrl.runners.supervise import ChildLink, child_process

if TYPE_CHECKING:  # the transport imports the rollout collector, which imports this module
    from uavrl.runners.transport import WeightBroadcast

POLL_S = 0.2  # how often a waiting server or actor looks up (heartbeat, stop, a new server)


class InferenceSlots:
    """The shared request and reply tensors of N actors with K envs each, and their pipes.

    ``obs`` (N, K, D) and ``h`` (N, K, H) are written by actor i before its request; the server
    writes ``params`` (N, K, P), ``values`` (N, K), ``h`` (the new state) and ``versions`` (N,)
    (the weights it acted with) before its reply. ``server_incarnation`` counts server starts."""

    def __init__(self, model: ActorCritic, n_actors: int, k: int, ctx: Any) -> None:
        n = n_actors
        self.obs = torch.zeros(n, k, model.spec.obs_dim).share_memory_()
        self.h = torch.zeros(n, k, model.state_size).share_memory_()
        self.params = torch.zeros(n, k, model.policy.param_dim).share_memory_()
        self.values = torch.zeros(n, k).share_memory_()
        self.versions = torch.zeros(n, dtype=torch.int64).share_memory_()
        self.server_incarnation = ctx.Value("q", 0, lock=False)
        # (server's reading end, actor's writing end) and (actor's reading end, server's writing end)
        self.requests = [ctx.Pipe(duplex=False) for _ in range(n)]
        self.replies = [ctx.Pipe(duplex=False) for _ in range(n)]


def serve(
    model: ActorCritic,
    slots: InferenceSlots,
    refresh: Callable[[ActorCritic, int], int],
    running: Callable[[], bool],
    beat: Callable[[], None] = lambda: None,
) -> None:
    """The server's loop, while ``running()``: wait for requests, answer all that are waiting
    with one forward pass of ``model`` (on its device), after ``refresh(model, version)``
    brought its weights up to date (the version it returns is stamped on the replies)."""
    device = model_device(model)
    readers: list[Any] = [reader for reader, _ in slots.requests]
    actor_of = {reader: i for i, reader in enumerate(readers)}
    version = -1
    while running():
        beat()
        ready: list[Any] = wait(readers, timeout=POLL_S)
        if not ready:
            continue
        asked = {actor_of[r]: r.recv() for r in ready}
        actors = torch.tensor(sorted(asked))
        version = refresh(model, version)
        k = slots.obs.shape[1]
        with torch.no_grad():
            obs = slots.obs[actors].flatten(0, 1).to(device)
            h = slots.h[actors].flatten(0, 1).to(device)
            params, values, h = model.step(obs, h)
        slots.params[actors] = params.to(CPU).unflatten(0, (len(actors), k))
        slots.values[actors] = values.to(CPU).unflatten(0, (len(actors), k))
        slots.h[actors] = h.to(CPU).unflatten(0, (len(actors), k))
        slots.versions[actors] = version
        for actor in actors.tolist():
            slots.replies[actor][1].send(asked[actor])


def inference_server_process(
    config: Config, weights: WeightBroadcast, slots: InferenceSlots, link: ChildLink
) -> None:
    """The server's process: its model on ``runner.actor_device``, the latest published weights
    fetched before every forward pass."""
    with child_process(link.channel, link.child) as parent:
        model = clone_model(weights.model).to(actor_device(config))
        serve(
            model,
            slots,
            weights.fetch,
            lambda: not link.stop.is_set() and (parent is None or parent.is_alive()),
            link.beat,
        )
        link.finished()


class ServerStopped(Exception):
    """The run stopped (or its parent died) while an actor waited for the server."""


class ServedPolicy:
    """What an actor's collector acts with when a server holds the policy: ``act`` and ``step``
    write the K observations and hidden states into the actor's slot, ask the server and wait
    for its answer (beating the actor's heartbeat meanwhile). Sampling stays with the actor,
    through the policy head of ``template`` (a host copy of the model's architecture).
    ``incarnation`` is the actor process's (0, or the restart it is)."""

    def __init__(
        self,
        template: ActorCritic,
        slots: InferenceSlots,
        actor: int,
        link: ChildLink,
        parent: Any,
        incarnation: int = 0,
    ) -> None:
        self.policy = template.policy
        self.state_size = template.state_size
        self.slots = slots
        self.actor = actor
        self.link = link
        self.parent = parent
        # numbered apart from a dead predecessor's requests, whose late replies are then dropped
        self.sequence = incarnation << 32
        self.oldest_version: int | None = None  # of the weights that acted since the last take
        self._send = slots.requests[actor][1]
        self._receive = slots.replies[actor][0]

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.state_size)

    def act(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params, _, h = self.step(obs, h)
        return params, h

    def step(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, slots = self.actor, self.slots
        slots.obs[i].copy_(obs)
        slots.h[i].copy_(h)
        self.sequence += 1
        self._wait_for(self.sequence)
        version = int(slots.versions[i])
        self.oldest_version = version if self.oldest_version is None else min(self.oldest_version, version)
        return slots.params[i].clone(), slots.values[i].clone(), slots.h[i].clone()

    def take_version(self) -> int:
        """The oldest weights' version that acted since the last call (-1 if none did)."""
        version, self.oldest_version = self.oldest_version, None
        return -1 if version is None else version

    def _wait_for(self, sequence: int) -> None:
        """Send request ``sequence`` and wait for its reply; only a wait past ``POLL_S`` (not
        every env step) beats the heartbeat, looks for a stop and asks a new server again."""
        server = self.slots.server_incarnation.value  # the server incarnation our request went to
        self._send.send(sequence)
        while True:
            while self._receive.poll(POLL_S):
                if self._receive.recv() == sequence:
                    return
            self.link.beat()  # waiting for the server is a sign of life too
            if self.link.stop.is_set() or (self.parent is not None and not self.parent.is_alive()):
                raise ServerStopped
            if server != self.slots.server_incarnation.value:
                server = self.slots.server_incarnation.value
                self._send.send(sequence)
