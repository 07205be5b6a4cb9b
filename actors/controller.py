"""The controller actor: one Ray actor owns the pruning policy; generators ask it per scale.

A generator builds its batch's feature rows and masks itself (`PolicyController`), then makes
one round trip per scale for the whole batch: `ActorAct(handle)` is the `act` function it
calls. The actor answers deterministically (the most likely allowed action), so an image is the
same whether the policy runs in process or here (the tests check it).
"""

from __future__ import annotations

import numpy as np
import ray
import torch

CONTROLLER_ACTOR_PREFIX = "ecad-ray-controller-"


@ray.remote(num_cpus=0)
class ControllerActor:
    """Holds one policy; `act(features, mask)` -> action index per row."""

    def __init__(self, weights: str):
        from ecad_ray.var.rl.checkpoint import load_policy

        torch.set_num_threads(1)
        self.policy, _, _ = load_policy(weights)

    def ready(self) -> bool:
        """Answers once the policy is loaded (generators wait for it before their first batch)."""
        return True

    def act(self, features: np.ndarray, mask: np.ndarray) -> list[int]:
        """The policy's deterministic choice for each row."""
        return self.policy.act(torch.from_numpy(features), torch.from_numpy(mask))


class ActorAct:
    """`act` function for `PolicyController` that calls a `ControllerActor` (one round trip)."""

    def __init__(self, handle):
        self.handle = handle
        ray.get(handle.ready.remote())  # the actor's start-up is start-up, not a round trip of a batch

    def __call__(self, features: torch.Tensor, mask: torch.Tensor) -> list[int]:
        return ray.get(self.handle.act.remote(features.numpy(), mask.numpy()))


def start_controller_actor(weights: str, name: str):
    """A named controller actor (generator actors look it up by name)."""
    return ControllerActor.options(name=name).remote(weights)
