"""`ecad-ray dataset prompts | generate | status | check`: synthetic classification sets from class names.

This module owns the `dataset` group and the image commands; `prompts` lives in
`dataset_prompts.py` (its own `register(dataset_app)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray.errors import UserError
from ecad_ray_cli.options import Address, BatchSize, NumWorkers, OutputDir, StartSeed, ThreadsPerWorker

dataset_app = typer.Typer(help="Synthetic classification datasets from class names (the nameonly workflow).", no_args_is_help=True)


def generate(
    prompts: Annotated[Path, typer.Option("--prompts", help="Prompt JSON in nameonly's layout ({class: {metaprompts: [{prompts: [{content}]}]}}).")],
    output_dir: OutputDir,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Class set: pacs, cifar10, shapes, ...")] = None,
    classes_file: Annotated[Optional[Path], typer.Option("--classes-file", help="Text file, one class name per line (instead of --dataset).")] = None,
    class_range: Annotated[Optional[str], typer.Option("--class-range", help="START:END of the class set's classes.")] = None,
    images_per_class: Annotated[Optional[int], typer.Option("--images-per-class", help="Images per class (instead of base count x --increase-ratio).")] = None,
    increase_ratio: Annotated[Optional[float], typer.Option("--increase-ratio", help="Images per class = base count x this (default 1.15, as nameonly).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Text-to-image model (repeat for several; default demo).")] = None,
    model_share: Annotated[Optional[str], typer.Option("--model-share", help="Each --model's share of every class's images, e.g. 0.7,0.3 (default equal).")] = None,
    schedule: Annotated[Optional[Path], typer.Option("--schedule", help="ECAD caching schedule (JSON) applied to every model.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps (default: the model's).")] = None,
    image_format: Annotated[str, typer.Option("--format", help="jpg or png.")] = "jpg",
    size: Annotated[int, typer.Option("--size", help="Side of the square images written, in pixels.")] = 224,
    num_workers: NumWorkers = 1,
    min_workers: Annotated[Optional[int], typer.Option("--min-workers", help="Fewest generation actors; the pool grows to --num-workers as the cluster gets room (default: --num-workers).")] = None,
    batch_size: BatchSize = 4,
    start_seed: StartSeed = 0,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Images per ledger task (a class x model x chunk).")] = 50,
    threads_per_worker: ThreadsPerWorker = 1,
    address: Address = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", help="A running task is taken again this long after its process's last heartbeat.")] = 60.0,
) -> None:
    """Generate a class-per-folder image dataset through the Ray plan; resumable, and any number of processes can share one --output-dir."""
    from ecad_ray.dataset.generation import DatasetConfig

    config = DatasetConfig(
        output_dir=str(output_dir), prompts=str(prompts), models=tuple(model or ("demo",)), dataset=dataset,
        classes_file=str(classes_file) if classes_file else None, class_range=class_range,
        images_per_class=images_per_class, increase_ratio=increase_ratio, model_share=parse_shares(model_share),
        schedule=str(schedule) if schedule else None, steps=steps, format=image_format, size=size,
        num_workers=num_workers, min_workers=min_workers, batch_size=batch_size, start_seed=start_seed,
        chunk_size=chunk_size, threads_per_worker=threads_per_worker, address=address, device=device,
        lease_seconds=lease_seconds,
    )
    run(config)


def parse_shares(text: str | None) -> tuple[float, ...] | None:
    """`0.7,0.3` -> (0.7, 0.3)."""
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--model-share {text!r}: expected numbers separated by commas, e.g. 0.7,0.3") from None


def run(config) -> None:
    """Run the dataset plan with a progress bar; print what this process did (patched in CLI tests)."""
    from rich.console import Console
    from rich.progress import Progress

    from actors.dataset_plan import run_dataset_generate

    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating", total=None)
        summary = run_dataset_generate(config, lambda done, total: bar.update(task, completed=done, total=total))
    where = f"table: {summary.table_path}" if summary.table_path else \
        f"other processes still hold tasks; `ecad-ray dataset status {summary.output_dir}` shows them"
    console.print(f"{summary.new_images} new image(s), {summary.kept_images} kept, {summary.tasks_done} task(s) done "
                  f"by this process, in {summary.wall_seconds:.1f} s -> {summary.output_dir}; {where}", soft_wrap=True)


def status(output_dir: Annotated[Path, typer.Argument(help="The dataset's --output-dir.")]) -> None:
    """Per-class progress of a dataset: images done/target, running tasks and their workers, failed tasks and why."""
    from ecad_ray.dataset.status import status_lines

    for line in status_lines(output_dir):
        print(line)


def check(
    output_dirs: Annotated[list[Path], typer.Argument(help="Dataset folders (one per prompt strategy to compare).")],
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs of the train-on-generated classifier.")] = 8,
) -> None:
    """Counts per class vs target; on the shapes set, accuracy on real images of a classifier trained on the generated ones."""
    from ecad_ray.dataset.check import check_dataset, check_lines

    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be a positive integer")
    for line in check_lines([check_dataset(out, epochs=epochs) for out in output_dirs]):
        print(line)


dataset_app.command("generate")(generate)
dataset_app.command("status")(status)
dataset_app.command("check")(check)


def register(root: typer.Typer) -> None:
    """Add the `dataset` group to the root app."""
    from ecad_ray_cli import dataset_prompts

    dataset_prompts.register(dataset_app)
    root.add_typer(dataset_app, name="dataset")
