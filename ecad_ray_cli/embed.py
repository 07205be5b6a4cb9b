"""`ecad-ray embed`: encode a benchmark prompt set once into an embeddings store.

The store is the one `generate` reads (`--input-embeddings D`); COCO megabatches and MJHQ /
Parti categories become its partition folders. Rerunning the same command after an
interruption encodes only the prompts not stored yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecad_ray.errors import UserError
from ecad_ray.prompt_sources import COCO_MEGABATCH, DATASETS


def register(app: typer.Typer) -> None:
    """Attach the `embed` command."""
    app.command("embed")(embed)


def embed(
    dataset: Annotated[str, typer.Option(help=f"Prompt set format: {' | '.join(DATASETS)}.")],
    file_path: Annotated[Path, typer.Option(help="The prompt file (txt, JSON or TSV as --dataset says).")],
    output_dir: Annotated[Path, typer.Option(help="Embeddings store folder (created; reused to resume).")],
    model: Annotated[str, typer.Option(help="Model whose text encoder to use (registry name, hub id or folder).")] = "demo",
    prompt_batch_size: Annotated[int, typer.Option(help="Prompts encoded per call (one shard each).")] = 64,
    seed: Annotated[int | None, typer.Option(help="With --limit: sample the prompts at random with this seed.")] = None,
    limit: Annotated[int | None, typer.Option(help="Embed at most this many prompts.")] = None,
    negative_prompt: Annotated[str, typer.Option(help="Negative prompt stored with every prompt (PixArt).")] = "",
    megabatch_size: Annotated[int, typer.Option(help="COCO lines per megabatch partition.")] = COCO_MEGABATCH,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.")] = "auto",
) -> None:
    """Embed a prompt set into an embeddings store, streaming, resumable."""
    from ecad_ray.embeddings import EmbeddingStore
    from ecad_ray.engine import TextEncoder
    from ecad_ray.models.registry import resolve_model
    from ecad_ray.prompt_sources import PromptSource, embed_prompts, iter_prompts

    source = PromptSource(dataset, file_path, limit, seed, megabatch_size)
    if prompt_batch_size < 1:
        raise UserError(f"--prompt-batch-size {prompt_batch_size}: must be positive")
    rows = iter_prompts(source)
    encoder = TextEncoder(resolve_model(model), device, dtype)
    store = EmbeddingStore(output_dir)

    def progress(encoded: int, skipped: int) -> None:
        typer.echo(f"\rembedded {encoded}, already stored {skipped}", nl=False, err=True)

    encoded, skipped = embed_prompts(rows, store, encoder, prompt_batch_size, negative_prompt, progress)
    typer.echo("", err=True)
    typer.echo(f"{output_dir}: embedded {encoded} prompt(s), {skipped} already stored (model {encoder.model_spec.name})")
