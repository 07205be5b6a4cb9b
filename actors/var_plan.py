"""The Ray Data plan of `ecad-ray var generate`: rows -> VarGenerator actors -> writer.

Same shape as the main generate plan: `from_items(rows)` ->
`map_batches(VarGenerator, compute=ActorPoolStrategy(size=N))` -> `map_batches(writer)`;
the driver then writes `config_all.json` and `metadata.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from actors.plan import ray_session
from actors.var import WRITTEN_COLUMNS, VarGenerator, check_columns, options_dict, write_var_items
from ecad_ray.var.run import VarRunOptions, write_run_files


def run_var_generate(rows: list[dict[str, Any]], options: VarRunOptions, output_dir: str | Path,
                     num_actors: int = 1, batch_size: int = 8, address: str | None = None) -> list[dict[str, Any]]:
    """Generate every row through Ray Data, write the items and the run files; returns item configs.

    Joins `address` or starts a local Ray for the run (left running if one already was)."""
    with ray_session(address, num_cpus=max(2, num_actors)):
        return _run(rows, options, output_dir, num_actors, batch_size)


def _run(rows, options, output_dir, num_actors, batch_size):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = ray.data.from_items(rows)
    ds = ds.map_batches(VarGenerator, fn_constructor_kwargs={"options": options_dict(options)},
                        compute=ray.data.ActorPoolStrategy(size=num_actors), batch_size=batch_size,
                        num_cpus=options.threads, batch_format="numpy")
    ds = ds.map_batches(write_var_items, fn_kwargs={"output_dir": str(output_dir)}, batch_size=batch_size,
                        num_cpus=0.25, batch_format="numpy")
    written = ds.take_all()
    if written:
        check_columns("var generate driver", written[0], WRITTEN_COLUMNS)
    configs = [json.loads(r["config_json"]) for r in written]
    wall = time.perf_counter() - t0
    write_run_files(output_dir, options, configs, wall, {"num_actors": num_actors, "batch_size": batch_size})
    return configs
