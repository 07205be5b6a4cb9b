"""One `var generate` run without Ray specifics: which items to make (`plan_var_run`), how to
make a batch of them (`BatchGenerator`), and the run-level files (`write_run_files`). The Ray
plan (`actors.var_plan`) calls these; so can a plain loop (`generate_local`).

Besides its own files (`config_all.json`, `metadata.json`, one folder per item) a run writes
`results.parquet` in the table every run shares (`ecad_ray.records.RESULTS_SCHEMA`: schedule
"none", pruning = the controller, MACs per image), so `ecad-ray metrics`, `report` and
`demo score` read VAR runs exactly as they read `generate` runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ecad_ray.errors import UserError
from ecad_ray.prompts import Prompt, from_texts, read_prompt_file
from ecad_ray.records import NOT_APPLIED, RESULTS_FILE, write_results
from ecad_ray.var.controllers import Controller, describe, make_controller
from ecad_ray.var.generation import VarPipeline
from ecad_ray.var.items import generate_items
from ecad_ray.var.outputs import item_files, item_name, write_json

ROW_COLUMNS = {
    "index": "position of the item in the run (int)",
    "item_name": "folder name of the item's outputs (str)",
    "class_label": "class label, -1 when the item is prompted (int)",
    "prompt": "prompt text, '' when the item is class-conditioned (str)",
    "prompt_id": "stable id of the condition: the prompt file's id, or class:<label> (str)",
    "prompt_index": "position of the condition (prompt or class) in the run (int)",
    "seed": "seed of the item's own random generator (int)",
}


@dataclass(frozen=True)
class VarRunOptions:
    """Everything that decides what a `var generate` run produces (recorded in config_all.json)."""

    model: str = "demo-var"  # demo-var | random:<preset> | .safetensors | FoundationVision .pth / folder
    vae: str | None = None  # FoundationVision tokenizer checkpoint when `model` is a .pth
    controller: str = "none"  # none | default (seed tail pattern) | "width:ratio,..." | rl:POLICY[@BUDGET]
    cfg: float | None = None  # CFG scale override (None = the model's default)
    top_k: int | None = None  # top-k override
    top_p: float | None = None  # top-p override
    prune_layers: tuple[int, int] | None = None  # [start, end) layers that prune; None = FastVAR's share
    save_intermediates: bool = False  # summed_codes/ and rescale_codes/ PNGs per scale
    spectra: bool = False  # DFT spectra .npy per scale
    device: str = "cpu"  # torch device of the generator
    dtype: str = "auto"  # Infinity's block precision: auto (bf16 on a GPU, else fp32) | fp32 | bf16
    threads: int = 1  # torch threads per generator process

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def parse_layer_range(text: str | None, option: str = "--prune-layers") -> tuple[int, int] | None:
    """`"3:28"` -> (3, 28); None/'' -> None."""
    if not text:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise UserError(f"{option} {text!r}: expected start:end layer indices, e.g. 3:28") from None
    if not 0 <= a < b:
        raise UserError(f"{option} {text!r}: need 0 <= start < end")
    return a, b


def build_rows(classes: list[int] | None, prompts: list[Prompt] | None, images_per_condition: int = 1,
               seed: int = 0) -> list[dict[str, Any]]:
    """One row per (condition, image): seeds run from `seed` for each condition."""
    if bool(classes) == bool(prompts):
        raise UserError("--classes / --prompt-file: give exactly one of them")
    if images_per_condition < 1:
        raise UserError("--num-images-per-prompt: must be >= 1")
    rows = []
    conds = ([(int(c), "", f"class:{int(c)}") for c in classes] if classes
             else [(-1, p.text, p.prompt_id) for p in prompts])
    for ci, (label, prompt, prompt_id) in enumerate(conds):
        for k in range(images_per_condition):
            i = len(rows)
            s = seed + k
            rows.append({"index": i, "item_name": item_name(i, s, label if label >= 0 else None, f"{ci:03d}"),
                         "class_label": label, "prompt": prompt, "prompt_id": prompt_id, "prompt_index": ci,
                         "seed": s})
    return rows


def default_conditions(pipe: VarPipeline) -> tuple[list[int] | None, list[Prompt] | None]:
    """What a run draws when given no classes and no prompts: every class of a class-conditional
    model, the demo's held-out captions for a text-conditional one."""
    if pipe.text_conditional:
        from ecad_ray.shapes import heldout_captions

        return None, from_texts(heldout_captions())
    return list(range(pipe.config.var.num_classes)), None


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_dtype(text: str, device: str) -> torch.dtype:
    """`--dtype`: auto is bf16 on a GPU (how Infinity runs), float32 elsewhere."""
    if text == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if text not in DTYPES:
        raise UserError(f"--dtype {text}: choose auto, fp32 or bf16")
    return DTYPES[text]


def plan_var_run(options: VarRunOptions, classes: list[int] | None = None, prompt_file: str | Path | None = None,
                 images_per_condition: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """The rows of a `var generate` run, checked in the driver before any Ray actor starts.

    Loads the model once to check what only it can tell (pruning widths, layer range, class
    labels, prompts) and to pick the default conditions; a bad value is a `UserError` naming
    its option."""
    from ecad_ray.var.checkpoints import load_var_model

    pipe = load_var_model(options.model, options.vae)
    prompts = read_prompt_file(prompt_file) if prompt_file else None
    if classes is None and prompts is None:
        classes, prompts = default_conditions(pipe)
    rows = build_rows(classes, prompts, images_per_condition, seed)
    make_controller(options.controller, pipe.patch_nums, pipe)
    if rows[0]["class_label"] >= 0:
        pipe.conditions(classes=sorted({r["class_label"] for r in rows}))
    else:
        pipe.conditions(prompts=[r["prompt"] for r in rows])
    if options.prune_layers and options.prune_layers[1] > pipe.depth:
        raise UserError(f"--prune-layers: end {options.prune_layers[1]} is past the model's {pipe.depth} layers")
    if resolve_dtype(options.dtype, options.device) != torch.float32 and not hasattr(pipe, "dtype"):
        raise UserError(f"--dtype {options.dtype}: only Infinity models run in bf16; VAR models run in fp32")
    return rows


@dataclass
class BatchGenerator:
    """Loads the generator once and turns batches of rows into item files + configs."""

    options: VarRunOptions
    policy_act: Any = None  # where an rl: policy runs (the controller actor's proxy); None = in process
    pipeline: VarPipeline = field(init=False)
    controller: Controller = field(init=False)

    def __post_init__(self) -> None:
        from ecad_ray.var.checkpoints import load_var_model

        torch.set_num_threads(self.options.threads)
        pipe = load_var_model(self.options.model, self.options.vae, self.options.device)
        changes = {k: v for k, v in (("cfg", self.options.cfg), ("top_k", self.options.top_k),
                                     ("top_p", self.options.top_p)) if v is not None}
        if changes:
            pipe = pipe.with_sampling(**changes)
        if self.options.prune_layers:
            end = self.options.prune_layers[1]
            if end > pipe.depth:
                raise UserError(f"--prune-layers: end {end} is past the model's {pipe.depth} layers")
            pipe.layer_range = self.options.prune_layers
        if hasattr(pipe, "dtype"):  # Infinity
            pipe.dtype = resolve_dtype(self.options.dtype, self.options.device)
        self.pipeline = pipe
        self.controller = make_controller(self.options.controller, pipe.patch_nums, pipe, self.policy_act)

    def __call__(self, rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, bytes], dict[str, Any]]]:
        """(item_name, files, config) for each row, generated as one batch."""
        pipe = self.pipeline
        labels = [int(r["class_label"]) for r in rows]
        if all(lbl >= 0 for lbl in labels):
            cond = pipe.conditions(classes=labels)
        elif all(lbl < 0 for lbl in labels):
            cond = pipe.conditions(prompts=[str(r["prompt"]) for r in rows])
        else:
            raise ValueError("a batch mixes class and prompt rows")
        seeds = [int(r["seed"]) for r in rows]
        keep = self.options.save_intermediates or self.options.spectra
        t0 = time.perf_counter()
        if getattr(self.controller, "per_item", False):  # one ratio per item: the RL policy
            if keep:
                raise UserError("--save-intermediates / --spectra: not available with an rl: controller yet")
            result = generate_items(pipe, cond, seeds, self.controller)
            item_ratios, controller_seconds = result.item_ratios, result.controller_seconds
        else:
            result = pipe.generate(cond, seeds, self.controller, keep_intermediates=keep)
            item_ratios, controller_seconds = [result.ratios] * len(rows), 0.0
        wall = time.perf_counter() - t0
        flops_full = pipe.flops([0.0] * len(pipe.patch_nums))
        out = []
        for b, row in enumerate(rows):
            ratios = item_ratios[b]
            flops = pipe.flops(ratios)
            files = item_files(result, b, self.options.save_intermediates, self.options.spectra)
            config = {
                "item_name": row["item_name"], "model": self.options.model, "model_config": pipe.config.name,
                "class_label": labels[b] if labels[b] >= 0 else None, "prompt": row["prompt"] or None,
                "class_name": class_name(pipe.class_names, labels[b]),
                "prompt_id": row["prompt_id"], "prompt_index": int(row["prompt_index"]),
                "image_size": pipe.config.image_size,
                "condition": int(cond[b]) if isinstance(cond, torch.Tensor) and cond.ndim == 1 else None,
                "seed": seeds[b],
                "controller": describe(self.controller), "widths": list(pipe.patch_nums),
                "ratios": ratios, "skipped_widths": [w for w, r in zip(pipe.patch_nums, ratios) if r >= 1],
                "prune_layers": list(pipe.layer_range), "sampling": asdict(pipe.sampling),
                "transformer_gflops": sum(flops) / 1e9, "transformer_gflops_unpruned": sum(flops_full) / 1e9,
                "transformer_macs": sum(flops) / 2,
                "batch_size": len(rows), "batch_seconds": wall, "transformer_seconds": result.transformer_seconds,
                "decode_seconds": result.decode_seconds, "controller_seconds": controller_seconds,
                # generation proper: all scales + the final decode, without intermediates/spectra work
                "seconds_per_image": (result.transformer_seconds + result.decode_seconds) / len(rows),
            }
            out.append((row["item_name"], files, config))
        return out


def class_name(names: tuple[str, ...], label: int) -> str | None:
    """A class item's name (`class 7` when the model names none); None for a prompted item."""
    if label < 0:
        return None
    return names[label] if label < len(names) else f"class {label}"


def result_row(config: dict[str, Any]) -> dict[str, Any]:
    """An item's row in the shared results table: uncached (schedule "none"), pruned as its
    controller says; a class item's prompt is its class name (what CLIP or a judge reads)."""
    return {
        "prompt_index": config["prompt_index"], "prompt_id": config["prompt_id"],
        "prompt": config["prompt"] or config["class_name"], "partition": "", "seed": config["seed"],
        "model": config["model"], "schedule": NOT_APPLIED, "pruning": config["controller"],
        "height": config["image_size"], "width": config["image_size"], "guidance_scale": config["sampling"]["cfg"],
        "image_path": f"{config['item_name']}/image.png", "seconds_per_image": config["seconds_per_image"],
        "macs": config["transformer_macs"],
    }


def write_run_files(out_dir: str | Path, options: VarRunOptions, configs: list[dict[str, Any]], wall_seconds: float,
                    extra: dict[str, Any] | None = None) -> None:
    """`config_all.json` (options + every item's config), `metadata.json` (prompt and class per
    item) and `results.parquet` (the table every run shares), each written atomically."""
    out_dir = Path(out_dir)
    configs = sorted(configs, key=lambda c: c["item_name"])
    write_json(out_dir / "config_all.json", {
        "options": options.to_dict(), "num_items": len(configs), "wall_seconds": wall_seconds,
        **(extra or {}), "items": configs})
    write_json(out_dir / "metadata.json", {
        c["item_name"]: {"prompt": c["prompt"], "class": c["class_label"], "seed": c["seed"]} for c in configs})
    write_results([result_row(c) for c in configs], out_dir / RESULTS_FILE)


def generate_local(rows: list[dict[str, Any]], options: VarRunOptions, output_dir: str | Path,
                   batch_size: int = 8) -> list[dict[str, Any]]:
    """The same run as the Ray plan, in this process (for tests, benchmarks and debugging)."""
    from ecad_ray.var.outputs import write_item

    t0 = time.perf_counter()
    generate = BatchGenerator(options)
    configs = []
    for kind in (True, False):  # class rows, then prompt rows
        part = [r for r in rows if (int(r["class_label"]) >= 0) == kind]
        for i in range(0, len(part), batch_size):
            for name, files, config in generate(part[i:i + batch_size]):
                write_item(output_dir, name, files, config)
                configs.append(config)
    write_run_files(output_dir, options, configs, time.perf_counter() - t0, {"batch_size": batch_size, "ray": False})
    return configs
