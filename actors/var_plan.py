"""The plan of `ecad-ray var generate`: rows -> VarGenerator actors -> driver writes.

Like the generate plan, it is data run by `actors.pipeline.run_stages`:
`[StageSpec(VarGenerator, pool=(N, N))]`; the driver writes each item as its batch arrives (so items land on the machine that ran the command, even on a
cluster), then `config_all.json` and `metadata.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from actors.pipeline import StageSpec, run_stages
from actors.plan import ray_session, reported_failures
from actors.var import VarGenerator, options_dict, write_var_items
from ecad_ray.var.run import VarRunOptions, write_run_files


def run_var_generate(rows: list[dict[str, Any]], options: VarRunOptions, output_dir: str | Path,
                     num_actors: int = 1, batch_size: int = 8, address: str | None = None) -> list[dict[str, Any]]:
    """Generate every row through Ray Data, write the items and the run files; returns item configs.

    Joins `address` or starts a local Ray for the run (left running if one already was)."""
    with reported_failures(output_dir):
        batches = run_stages(rows, var_stages(options, num_actors, batch_size))  # checked before Ray starts
        with ray_session(address, num_cpus=max(2, num_actors)):
            return _run(batches, options, output_dir, num_actors, batch_size)


def var_stages(options: VarRunOptions, num_actors: int, batch_size: int) -> list[StageSpec]:
    """The `var generate` plan as data: one pool of `num_actors` VAR generators."""
    return [StageSpec(VarGenerator, {"options": options_dict(options)}, batch_size, num_cpus=options.threads,
                      pool=(num_actors, num_actors))]


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
