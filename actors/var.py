"""Ray Data stages for VAR generation: `VarGenerator` (a callable class, one generator per
actor) and `write_var_items` (writes each item's files atomically).

Both declare the columns they consume and produce and check a batch on entry, naming the
stage in the error. The library does the work (`ecad_ray.var.run`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from actors.stage import Stage
from ecad_ray.var.outputs import pack_files, unpack_files, write_item
from ecad_ray.var.run import ROW_COLUMNS, BatchGenerator, VarRunOptions

GENERATED_COLUMNS = {
    "item_name": "folder name of the item (str)",
    "files_npz": "the item's files (relative path -> bytes) packed as one .npz blob",
    "config_json": "the item's config.json text",
}


def check_columns(stage: str, batch: dict[str, Any], columns: dict[str, str]) -> None:
    """Raise naming the stage and the missing columns (with what they should hold)."""
    missing = [c for c in columns if c not in batch]
    if missing:
        wanted = "; ".join(f"{c}: {columns[c]}" for c in missing)
        raise ValueError(f"{stage}: batch lacks column(s) {wanted}")


class VarGenerator(Stage):
    """Callable class for `map_batches`: rows (ROW_COLUMNS) -> generated items (GENERATED_COLUMNS)."""

    name = "var generate"
    consumes = ROW_COLUMNS
    produces = GENERATED_COLUMNS

    def __init__(self, options: dict[str, Any], controller_actor: str | None = None):
        """`controller_actor`: name of the `ControllerActor` serving an rl: policy (one round
        trip per scale for the whole batch); None runs the policy in this process."""
        opts = dict(options)
        if opts.get("prune_layers") is not None:
            opts["prune_layers"] = tuple(opts["prune_layers"])
        act = None
        if controller_actor:
            import ray

            from actors.controller import ActorAct

            act = ActorAct(ray.get_actor(controller_actor))
        self.generate = BatchGenerator(VarRunOptions(**opts), policy_act=act)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = self.check(batch)
        rows = [{c: batch[c][i].item() if hasattr(batch[c][i], "item") else batch[c][i] for c in ROW_COLUMNS}
                for i in range(n)]
        out = {"item_name": [], "files_npz": [], "config_json": []}
        # class rows and prompt rows become separate sub-batches (a model takes one kind of condition)
        for kind in (True, False):
            part = [r for r in rows if (int(r["class_label"]) >= 0) == kind]
            if not part:
                continue
            for name, files, config in self.generate(part):
                out["item_name"].append(name)
                out["files_npz"].append(pack_files(files))
                out["config_json"].append(json.dumps(config))
        return {"item_name": np.array(out["item_name"], dtype=object),
                "files_npz": np.array(out["files_npz"], dtype=object),
                "config_json": np.array(out["config_json"], dtype=object)}


def write_var_items(batch: dict[str, np.ndarray], output_dir: str) -> dict[str, np.ndarray]:
    """Write each generated item of a batch under `output_dir` (the driver calls it per batch)."""
    check_columns("write_var_items", batch, GENERATED_COLUMNS)
    for name, blob, config in zip(batch["item_name"], batch["files_npz"], batch["config_json"]):
        write_item(output_dir, str(name), unpack_files(blob), json.loads(config))
    return {"item_name": batch["item_name"], "config_json": batch["config_json"]}


def options_dict(options: VarRunOptions) -> dict[str, Any]:
    """Options in the plain form actors receive."""
    return asdict(options)
