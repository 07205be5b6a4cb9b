"""`ecad-ray dataset prompts`: write a class set's prompt file (nameonly's JSON layout).

Rerunning the same command after an interruption or a failing LLM endpoint asks only for the
classes the file does not hold yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecad_ray.dataset.prompts import DEFAULT_PROMPTS_PER_CLASS, STRATEGIES
from ecad_ray_cli.options import Address, NumWorkers

_DEFAULTS = ", ".join(f"{s} {n}" for s, n in DEFAULT_PROMPTS_PER_CLASS.items())


def register(dataset_app: typer.Typer) -> None:
    """Attach `prompts` to the `dataset` group."""
    dataset_app.command("prompts")(prompts)


def prompts(
    output: Annotated[Path, typer.Option("--output", help="Prompt file to write (JSON); classes already in it are kept.")],
    strategy: Annotated[str, typer.Option(help=f"How prompts are made: {' | '.join(STRATEGIES)}.")] = "template",
    dataset: Annotated[Optional[str], typer.Option(help="Shipped class set: pacs, cifar10, domainnet, imagenet, imagenet_full, shapes.")] = None,
    classes_file: Annotated[Optional[Path], typer.Option(help="Text file with one class name per line (instead of --dataset).")] = None,
    class_range: Annotated[Optional[str], typer.Option(help="Only classes START:END of the set (0-based, END excluded).")] = None,
    prompts_per_class: Annotated[Optional[int], typer.Option(help=f"Prompts per class (default: {_DEFAULTS}).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of everything a strategy draws at random (per class).")] = 0,
    llm_endpoint: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (key from $ECAD_RAY_LLM_API_KEY or $OPENAI_API_KEY).")] = None,
    llm_model: Annotated[Optional[str], typer.Option(help="Model name the endpoint serves.")] = None,
    llm_rate: Annotated[float, typer.Option(help="LLM requests per second, all workers together.")] = 2.0,
    llm_retries: Annotated[int, typer.Option(help="Retries of a failing request (backoff 1 s, doubling).")] = 4,
    num_workers: NumWorkers = 1,
    address: Address = None,
) -> None:
    """Write prompts for every class of a class set: static templates, fake_f, or an LLM strategy."""
    from actors.dataset_prompts import make_prompt_file
    from ecad_ray.dataset.classes import load_class_set
    from ecad_ray.dataset.llm import LlmSettings
    from ecad_ray.dataset.prompts import PromptJob

    class_set = load_class_set(dataset, classes_file).select(class_range)
    llm = None
    if llm_endpoint is not None or llm_model is not None:
        llm = LlmSettings(llm_endpoint or "", llm_model or "", rate=llm_rate, retries=llm_retries)
    job = PromptJob(strategy, prompts_per_class, seed, llm)
    summary = make_prompt_file(class_set, job, output, num_workers=num_workers, address=address)
    asked = f", {summary.requests} LLM request(s)" if job.uses_llm else ""
    typer.echo(f"{summary.output}: {summary.written} class(es) written, {summary.kept} kept "
               f"({job.strategy}, {job.count} prompts per class{asked})")
