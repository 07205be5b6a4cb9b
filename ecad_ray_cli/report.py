"""`ecad-ray report RUN_DIR`: print the summary and save speed_quality.png and grid.png."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Attach the `report` command."""
    app.command("report")(report)


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory scored by `ecad-ray metrics`.")],
) -> None:
    """Print the per-schedule summary and write the two plots into RUN_DIR."""
    from rich.console import Console

    from ecad_ray.metrics.report import read_summary, summary_rich_table, write_report

    console = Console()
    console.print(summary_rich_table(read_summary(run_dir), title=str(run_dir)))
    for path in write_report(run_dir):
        console.print(f"wrote {path}")
