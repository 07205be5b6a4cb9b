"""The Ray Data plan of `ecad-ray var generate`: rows -> VarGenerator actors -> driver writes.

Same shape as the main generate plan: `from_items(rows)` ->
`map_batches(VarGenerator, compute=ActorPoolStrategy(size=N))`; the driver writes each item
as its batch arrives (so items land on the machine that ran the command, even on a
cluster), then `config_all.json` and `metadata.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from actors.plan import quiet_ray_data, ray_session, reported_failures
from actors.var import VarGenerator, options_dict, write_var_items
from ecad_ray.var.run import VarRunOptions, write_run_files


def run_var_generate(rows: list[dict[str, Any]], options: VarRunOptions, output_dir: str | Path,
                     num_actors: int = 1, batch_size: int = 8, address: str | None = None) -> list[dict[str, Any]]:
    """Generate every row through Ray Data, write the items and the run files; returns item configs.

    Joins `address` or starts a local Ray for the run (left running if one already was)."""
    with reported_failures(output_dir), ray_session(address, num_cpus=max(2, num_actors)):
        return _run(rows, options, output_dir, num_actors, batch_size)


def _run(rows, options, output_dir, num_actors, batch_size):
    import ray

    quiet_ray_data()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = ray.data.from_items(rows)
    ds = ds.map_batches(VarGenerator, fn_constructor_kwargs={"options": options_dict(options)},
                        compute=ray.data.ActorPoolStrategy(size=num_actors), batch_size=batch_size,
                        num_cpus=options.threads, batch_format="numpy")
    configs: list[dict[str, Any]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        configs += [json.loads(c) for c in write_var_items(batch, str(output_dir))["config_json"]]
    wall = time.perf_counter() - t0
    write_run_files(output_dir, options, configs, wall, {"num_actors": num_actors, "batch_size": batch_size})
    return configs
