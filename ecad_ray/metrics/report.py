"""Show a scored run: the summary as a table, speed vs quality, and an image grid.

`speed_quality.png` puts each setting at (speedup, quality), one panel per quality metric the
summary has, so the trade-off a setting buys is visible at a glance. `grid.png` shows the same
prompts and seeds (columns) under every setting (rows), reference first. A setting is a DiT
run's caching schedule or a VAR run's pruning (`ecad_ray.records.setting_label`), so both kinds
of run are drawn the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ecad_ray.errors import UserError
from ecad_ray.metrics.fid import load_rgb
from ecad_ray.metrics.runs import resolve_image
from ecad_ray.metrics.tables import METRICS_FILE, SUMMARY_FILE
from ecad_ray.records import NOT_APPLIED, setting_label

# quality column in summary.parquet -> (label, higher is better)
QUALITY = {
    "fid": ("FID", False),
    "clip_score_mean": ("CLIP score", True),
    "imagereward_mean": ("ImageReward", True),
    "lpips_mean": ("LPIPS vs reference", False),
    "ssim_mean": ("SSIM vs reference", True),
    "psnr_mean": ("PSNR vs reference (dB)", True),
}
SPEED_QUALITY_PNG = "speed_quality.png"
GRID_PNG = "grid.png"


def read_summary(run_dir: Path) -> pa.Table:
    """The run's `summary.parquet` (written by `ecad-ray metrics`)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise UserError(f"RUN_DIR {run_dir}: no {SUMMARY_FILE}; run `ecad-ray metrics {run_dir}` first")
    return pq.read_table(path)


_HEADERS = {
    "n_images": "images",
    "seconds_per_image": "s/img",
    "speedup": "speedup",
    "macs": "MACs",
    "fid": "FID",
    "clip_score_mean": "CLIP",
    "imagereward_mean": "ImageReward",
    "lpips_mean": "LPIPS",
    "ssim_mean": "SSIM",
    "psnr_mean": "PSNR",
    "n_errors": "err",
}


def _label(row: dict) -> str:
    """The setting a summary or metrics row belongs to (tables written before `pruning`: none)."""
    return setting_label(row["schedule"], row.get("pruning") or NOT_APPLIED)


def _setting_header(rows: list[dict]) -> str:
    """`schedule` for DiT runs, `pruning` for VAR runs, `setting` when a table mixes both."""
    if all((r.get("pruning") or NOT_APPLIED) == NOT_APPLIED for r in rows):
        return "schedule"
    return "pruning" if all(r["schedule"] == NOT_APPLIED for r in rows) else "setting"


def summary_rich_table(summary: pa.Table, title: str = "ecad-ray summary", partitions: bool = False):
    """A rich `Table` of the per-setting rows (reference first, then fastest first); with
    `partitions`, one row per setting and partition (COCO megabatch / category) instead."""
    from rich.table import Table

    rows = [r for r in summary.to_pylist() if partitions or r["partition"] == ""]
    rows.sort(key=lambda r: (r["partition"], not r["is_reference"], -(r["speedup"] or 0.0)))
    shown = [c for c in _HEADERS if any(r.get(c) for r in rows) or (c != "n_errors" and any(r.get(c) is not None for r in rows))]
    keys = ["model", "schedule"] if len({r["model"] for r in rows}) > 1 else ["schedule"]
    keys = ["partition", *keys] if partitions else keys
    table = Table(title=title)
    for name in (*keys, *shown):
        header = _setting_header(rows) if name == "schedule" else _HEADERS.get(name, name)
        if name in keys:
            table.add_column(header, overflow="fold")  # long schedule names wrap, numbers never do
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for r in rows:
        label = _label(r) + (" (ref)" if r["is_reference"] else "")
        firsts = [r["partition"] or "(all)"] if partitions else []
        firsts += [r["model"]] if "model" in keys else []
        table.add_row(*firsts, label, *(_fmt(r.get(c)) for c in shown))
    return table


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.2e}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def plot_speed_quality(summary: pa.Table, path: Path) -> Path | None:
    """Scatter of speedup vs each quality metric per setting; None when nothing to plot."""
    rows = [r for r in summary.to_pylist() if r["partition"] == "" and r["speedup"] is not None]
    panels = [c for c in QUALITY if any(_finite(r.get(c)) for r in rows)]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure((4.2 * ncols, 3.4 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    colors = {key: f"C{i % 10}" for i, key in enumerate(dict.fromkeys((r["model"], _label(r)) for r in rows))}
    for ax, col in zip(axes, panels):
        label, higher = QUALITY[col]
        for r in rows:
            if _finite(r.get(col)):
                ax.scatter(r["speedup"], r[col], s=60 if r["is_reference"] else 40, marker="*" if r["is_reference"] else "o",
                           color=colors[(r["model"], _label(r))])
                ax.annotate(_label(r), (r["speedup"], r[col]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("speedup vs reference (x)")
        ax.set_ylabel(f"{label} ({'higher' if higher else 'lower'} is better)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"speed vs quality per {_setting_header(rows)}")
    fig.tight_layout()
    return _save(fig, path)


def plot_grid(run_dir: Path, path: Path, n_prompts: int = 6) -> Path | None:
    """Rows = settings (reference first), columns = the first prompts/seeds all settings share."""
    run_dir = Path(run_dir)
    table_path = run_dir / METRICS_FILE
    if not table_path.is_file():
        return None
    have = pq.read_schema(table_path).names
    wanted = ("model", "schedule", "pruning", "prompt_id", "seed", "prompt", "image_path")
    rows = pq.read_table(table_path, columns=[c for c in wanted if c in have]).to_pylist()
    summary = read_summary(run_dir).to_pylist() if (run_dir / SUMMARY_FILE).is_file() else []
    reference = {_label(r) for r in summary if r["is_reference"]}
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["prompt_id"], r["seed"]), {})[(r["model"], _label(r))] = r
    lines = sorted({k for keys in by_key.values() for k in keys}, key=lambda k: (k[1] not in reference, k))
    # pairs every line has; distinct prompts first (each prompt's first seed), then more seeds
    order, seeds_seen = [], {}
    for key, per_line in by_key.items():
        if len(per_line) == len(lines):
            order.append((seeds_seen.get(key[0], 0), len(order), key))
            seeds_seen[key[0]] = seeds_seen.get(key[0], 0) + 1
    shared = [key for _, _, key in sorted(order)][:n_prompts]
    if not shared:
        return None
    fig = _figure((1.9 * len(shared), 1.9 * len(lines) + 0.4))
    axes = fig.subplots(len(lines), len(shared), squeeze=False)
    for i, line in enumerate(lines):
        for j, key in enumerate(shared):
            ax = axes[i][j]
            record = by_key[key][line]
            ax.imshow(load_rgb(resolve_image(run_dir, record["image_path"])))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_short(record["prompt"] or record["prompt_id"]), fontsize=6)
            if j == 0:
                ax.set_ylabel(line[1] if len({m for m, _ in lines}) == 1 else f"{line[0]}\n{line[1]}", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def write_report(run_dir: Path) -> list[Path]:
    """Both plots into the run directory; returns the files written."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    made = [
        plot_speed_quality(summary, run_dir / SPEED_QUALITY_PNG),
        plot_grid(run_dir, run_dir / GRID_PNG),
    ]
    return [p for p in made if p is not None]


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _figure(size: tuple[float, float]):
    """A matplotlib Figure with no pyplot state (no GUI backend, nothing global)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _save(fig, path: Path) -> Path:
    """Save through a temp file (atomic)."""
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
