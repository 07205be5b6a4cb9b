"""`ecad-ray embeddings`: inspect an embeddings store, import ECAD's `.pt` embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecad_ray.prompt_sources import DATASETS

embeddings_app = typer.Typer(help="Embeddings stores: import ECAD embeddings, show what a store holds.", no_args_is_help=True)


@embeddings_app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(help="Folder of ECAD per-prompt .pt files (megabatch_N/ or category folders kept).")],
    dst: Annotated[Path, typer.Argument(help="Embeddings store to write (created if missing).")],
    model: Annotated[str, typer.Option(help="The model that made the embeddings (recorded on every record).")],
    shard_size: Annotated[int, typer.Option(help="Prompts per shard file.")] = 256,
    prompts: Annotated[
        Path | None,
        typer.Option(help="The prompt file the embeddings were made from: restores each prompt's text "
                          "(ECAD's .pt files hold only tensors). Needs --dataset."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help=f"How ECAD named the files for --prompts: {' | '.join(DATASETS)} "
                          "(coco: megabatch_<i>/<i*3000+line>.pt; mjhq: <category>/<id>.pt)."),
    ] = None,
) -> None:
    """Convert ECAD's pickled per-prompt embeddings (loaded weights-only) into a store.

    ECAD's files carry no prompt text; give `--prompts FILE --dataset D` to map each file's
    name back to its text (a name the file does not list stops the import, with one error line,
    before anything is written). Without them every file must hold a "prompt" string."""
    from ecad_ray.ecad_import import import_ecad_embeddings

    count = import_ecad_embeddings(src, dst, model, shard_size, prompts=prompts, dataset=dataset)
    typer.echo(f"imported {count} prompt(s) from {src} -> {dst}")


@embeddings_app.command("info")
def info_cmd(store: Annotated[Path, typer.Argument(help="Embeddings store folder.")]) -> None:
    """Print prompts per model and partition in a store."""
    from collections import Counter

    from ecad_ray.embeddings import EmbeddingStore

    rows = EmbeddingStore(store).index().to_pylist()
    counts = Counter((r["model"], r["partition"] or "-") for r in rows)
    for (model, part), n in sorted(counts.items()):
        typer.echo(f"{model}\t{part}\t{n}")
    typer.echo(f"total\t\t{len(rows)}")


def register(app: typer.Typer) -> None:
    """Add the `embeddings` group to the root app."""
    app.add_typer(embeddings_app, name="embeddings")
