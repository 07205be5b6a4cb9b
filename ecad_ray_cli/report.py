"""`ecad-ray report RUN_DIR`: print the summary and save speed_quality.png and grid.png."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Attach the `report` command."""
    app.command("report")(report)


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or folder of runs) scored by `ecad-ray metrics`.")],
    partitions: Annotated[bool, typer.Option(help="One row per COCO megabatch / MJHQ or Parti category too.")] = False,
) -> None:
    """Print the per-schedule summary and write the two plots into RUN_DIR."""
    from rich.console import Console

    from ecad_ray.metrics.report import GRID_PNG, SPEED_QUALITY_PNG, read_summary, summary_rich_table, write_report

    Console().print(summary_rich_table(read_summary(run_dir), title=str(run_dir), partitions=partitions))
    written = write_report(run_dir)
    for path in written:
        typer.echo(f"wrote {path}")
    for name, why in ((SPEED_QUALITY_PNG, "no speedup: no reference schedule"), (GRID_PNG, "no metrics.parquet rows")):
        if run_dir / name not in written:
            typer.echo(f"skipped {name} ({why})")
