"""The plan of `ecad-ray var generate`: rows -> VarGenerator actors -> driver writes.

Like the generate plan, it is data run by `actors.pipeline.run_stages`:
`[StageSpec(VarGenerator, pool=(N, N))]` (plus, for an `rl:` controller, one `ControllerActor`
the generators ask per scale); the driver writes each item as its batch arrives (so items land on the machine that ran the command, even on a
cluster), then `config_all.json` and `metadata.json`.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from actors.controller import CONTROLLER_ACTOR_PREFIX, start_controller_actor
from actors.pipeline import StageSpec, run_stages
from actors.plan import ray_session, reported_failures
from actors.var import VarGenerator, options_dict, write_var_items
from ecad_ray.var.controllers import RL_PREFIX, parse_rl_spec
from ecad_ray.var.run import VarRunOptions, write_run_files


def run_var_generate(rows: list[dict[str, Any]], options: VarRunOptions, output_dir: str | Path,
                     num_actors: int = 1, batch_size: int = 8, address: str | None = None) -> list[dict[str, Any]]:
    """Generate every row through Ray Data, write the items and the run files; returns item configs.

    Joins `address` or starts a local Ray for the run (left running if one already was).
    An `rl:` controller is served by one `ControllerActor` that every generator asks once per
    scale and batch; it lives for the run."""
    actor = f"{CONTROLLER_ACTOR_PREFIX}{uuid.uuid4().hex[:8]}" if options.controller.startswith(RL_PREFIX) else None
    with reported_failures(output_dir):
        batches = run_stages(rows, var_stages(options, num_actors, batch_size, actor))  # checked before Ray starts
        with ray_session(address, num_cpus=max(2, num_actors)):
            handle = start_controller_actor(parse_rl_spec(options.controller)[0], actor) if actor else None
            try:
                return _run(batches, options, output_dir, num_actors, batch_size)
            finally:
                if handle is not None:
                    import ray

                    ray.kill(handle)


def var_stages(options: VarRunOptions, num_actors: int, batch_size: int,
               controller_actor: str | None = None) -> list[StageSpec]:
    """The `var generate` plan as data: one pool of `num_actors` VAR generators (asking the
    named controller actor for an rl: policy's ratios)."""
    return [StageSpec(VarGenerator, {"options": options_dict(options), "controller_actor": controller_actor},
                      batch_size, num_cpus=options.threads, pool=(num_actors, num_actors))]


def _run(batches, options, output_dir, num_actors, batch_size):
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs: list[dict[str, Any]] = []
    for batch in batches:
        configs += [json.loads(c) for c in write_var_items(batch, str(output_dir))["config_json"]]
    wall = time.perf_counter() - t0
    write_run_files(output_dir, options, configs, wall, {"num_actors": num_actors, "batch_size": batch_size})
    return configs
