"""`ecad-ray search`: evolve caching schedules (ECAD's NSGA-II) on Ray; `search status` shows the front."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray_cli.options import Address, BatchSize, NumImagesPerPrompt, NumWorkers, OutputDir, StartSeed, ThreadsPerWorker

app = typer.Typer(help="Evolve caching schedules for a model, prompts and quality metric (ECAD's NSGA-II).",
                  invoke_without_command=True, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def search(
    ctx: typer.Context,
    output_dir: OutputDir = None,
    model: Annotated[str, typer.Option(help="demo, a shipped PixArt/FLUX name, or a pipeline folder.")] = "demo",
    prompt_file: Annotated[Optional[Path], typer.Option(help="Prompts every candidate is scored on.")] = None,
    input_embeddings: Annotated[Optional[Path], typer.Option(help="Embeddings store whose prompts to use instead.")] = None,
    num_images_per_prompt: NumImagesPerPrompt = 1,
    population: Annotated[int, typer.Option(help="Candidates per generation (ECAD: 72).")] = 72,
    generations: Annotated[int, typer.Option(help="Generations evolved after the seed generation gen_000.")] = 10,
    objective: Annotated[str, typer.Option(help="judge, imagereward, clip, psnr, ssim or lpips.")] = "judge",
    fidelity: Annotated[str, typer.Option(help="psnr or ssim to the uncached images as a further objective "
                                               "(the front then trades quality, fidelity and MACs).")] = "",
    init_population: Annotated[Optional[Path], typer.Option(help="ECAD population or schedule folder to seed gen_000 (default: baselines).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the model's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of NSGA-II and of the random genomes.")] = 0,
    start_seed: StartSeed = 0,
    batch_size: BatchSize = 8,
    num_workers: NumWorkers = 1,
    threads_per_worker: ThreadsPerWorker = 1,
    address: Address = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the search in --output-dir.")] = False,
    method: Annotated[Optional[list[str]], typer.Option(
        help="A peer to score the final front against on the same prompts and seeds, e.g. pab:skip=2 "
             "(repeatable; see `ecad-ray benchmark --method`): methods.parquet + speed_vs_quality.png.")] = None,
) -> None:
    """Search schedules; every generation lands in --output-dir in ECAD's layout, front/ holds the best."""
    if ctx.invoked_subcommand is not None:
        return
    if output_dir is None:
        raise typer.BadParameter("--output-dir is required", param_hint="--output-dir")
    from ecad_ray.search.algorithm import NsgaSettings
    from ecad_ray.search.evaluator import EvalJob, job_prompts
    from ecad_ray.search.run import SearchConfig

    prompts = job_prompts(model, str(prompt_file) if prompt_file else None,
                          str(input_embeddings) if input_embeddings else None)
    job = EvalJob(prompts, num_images_per_prompt, start_seed, 1, "", str(input_embeddings or ""), batch_size)
    config = SearchConfig(model=model, job=job, output_dir=str(output_dir), objective=objective,
                          fidelity=fidelity, generations=generations, nsga=NsgaSettings(population=population, seed=seed),
                          init_population=str(init_population) if init_population else None, steps=steps,
                          resume=resume, num_workers=num_workers, threads_per_worker=threads_per_worker,
                          address=address, device=device)
    run(config, list(method or []))


def run(config, methods: list[str] = ()) -> None:
    """The search with a progress bar, then the front (patched in CLI tests)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from actors.search import search_on_ray
    from ecad_ray_cli.generate import exit_at_second_interrupt

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[front]}"))
    with exit_at_second_interrupt(), Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("gen 0", total=None, front="")

        def progress(p) -> None:
            best = max((r["quality"] for r in p.front), default=float("nan"))
            fastest = min((r["macs_ratio"] for r in p.front), default=float("nan"))
            bar.update(task, description=f"gen {p.generation}/{p.generations}", completed=p.done, total=p.total,
                       front=f"front {len(p.front)}: best quality {best:.3f}, fewest MACs {fastest:.3f}x")

        try:
            front = search_on_ray(config, progress, methods)
        except KeyboardInterrupt:
            bar.stop()
            console.print(f"interrupted; continue with the same command plus --resume ({config.output_dir})")
            raise typer.Exit(130) from None
    print_front(config.output_dir, front)
    if methods:
        from ecad_ray.search.compare import METHODS_FILE, PLOT_FILE, comparison_table
        import pyarrow.parquet as pq

        out = Path(config.output_dir)
        typer.echo(comparison_table(pq.read_table(out / METHODS_FILE).to_pylist()))
        typer.echo(f"table: {out / METHODS_FILE}\nplot: {out / PLOT_FILE}")


def print_front(output_dir, front: list[dict]) -> None:
    from ecad_ray.search.run import front_table

    typer.echo(front_table(front))
    typer.echo(f"front schedules: {Path(output_dir) / 'front'}")


@app.command("status")
def status(folder: Annotated[Path, typer.Argument(help="A search's --output-dir.")]) -> None:
    """Print the Pareto front found so far (works while the search runs)."""
    from ecad_ray.search.run import search_status

    done, front = search_status(folder)
    typer.echo(f"{folder}: {done}")
    print_front(folder, front)


def register(root: typer.Typer) -> None:
    """Add `search` (and `search status`) to the root app."""
    root.add_typer(app, name="search")
