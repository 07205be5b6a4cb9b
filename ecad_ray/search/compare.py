"""Every caching method in one table: ECAD schedules and peers on the same prompts and seeds.

    methods = comparison_methods(schedule_files, ["pab:skip=2", "fbc:threshold=0.1"])
    rows = compare_methods(evaluator, methods, spec)     # one dict per method, uncached first
    write_comparison(rows, folder)                       # methods.parquet + speed_vs_quality.png
    print(comparison_table(rows))

One code path for `ecad-ray benchmark --method`, `ecad-ray search --method` (its final report)
and `benchmarks/schedule_search.py`: every method is scored by the search's evaluator
(`CandidateEvaluator`: one model per worker, the job's images at fixed seeds, the uncached
images made once as the fidelity reference), so speed, quality and fidelity are measured the
same way for a schedule and for a peer. `macs_ratio` is a schedule's analytic count relative to
the uncached one (a peer decides what to skip at run time: empty); `counted_macs_ratio` is
what every method's run really computed (`LinearMacCounter`), the one cost axis that does not
move with the machine's load, as seconds on a shared 2-core box do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.caching.schedule import Schedule
from ecad_ray.errors import UserError
from ecad_ray.peers import PeerMethod, parse_method
from ecad_ray.search.objectives import PSNR_CAP

METHODS_FILE = "methods.parquet"
PLOT_FILE = "speed_vs_quality.png"
UNCACHED = "uncached"
KINDS = ("uncached", "schedule", "searched", "peer")  # table / plot groups
LABELLED = 16  # a kind with more points than this is plotted without names


@dataclass(frozen=True)
class Method:
    """One row of the comparison: a name, its kind, and what is applied (None: uncached)."""

    name: str
    kind: str
    setting: Schedule | PeerMethod | None = None


def comparison_methods(schedules: list[tuple[str, Schedule]] = (), specs: list[str] = (),
                       searched: list[tuple[str, Schedule]] = ()) -> list[Method]:
    """The methods to compare: named schedules, searched schedules and `--method` specs (parsed,
    so a bad spec is one line before any model loads). Names must be unique."""
    methods = [Method(n, "searched", s) for n, s in searched] + [Method(n, "schedule", s) for n, s in schedules]
    methods += [Method(m.text, "peer", m) for m in (parse_method(t) for t in specs)]
    names = [m.name for m in methods]
    dup = next((n for n in names if names.count(n) > 1 or n == UNCACHED), None)
    if dup:
        raise UserError(f"--method / --schedule-dir: two methods are named {dup!r}; each needs its own name")
    return methods


def compare_methods(evaluator, methods: list[Method], spec, repeats: int = 1, objective: str = "judge") -> list[dict]:
    """Score the uncached model and every method through `evaluator` (the search's `Evaluator`).

    `spec`: the model's `TransformerSpec`, for the schedules' MAC ratio; `objective`: the name of
    the evaluator's quality objective (the table's `objective` column). With `repeats` > 1 each
    method runs that many times and keeps its fastest time (the images are the same each time):
    on a shared machine one timing of a sub-second job is mostly noise.
    """
    from ecad_ray.caching.macs import schedule_mac_report

    reference = evaluator.reference()
    evaluator.open(reference)
    try:
        items = [(UNCACHED, None)] + [(m.name, m.setting) for m in methods]
        scores: dict[str, dict] = {}
        for key, got in evaluator.evaluate(items * max(1, repeats)):
            if key in scores:
                got = {**scores[key], "seconds_per_image": min(scores[key]["seconds_per_image"], got["seconds_per_image"])}
            scores[key] = got
    finally:
        evaluator.close()
    base = scores[UNCACHED]["seconds_per_image"]
    rows = []
    for m in [Method(UNCACHED, "uncached")] + list(methods):
        s = scores[m.name]
        macs = schedule_mac_report(m.setting, spec).ratio if isinstance(m.setting, Schedule) else None
        rows.append({"method": m.name, "kind": m.kind, "objective": objective,
                     "quality": s["quality"], "psnr": s.get("psnr"), "ssim": s.get("ssim"),
                     "lpips": s.get("lpips"), "seconds_per_image": s["seconds_per_image"],
                     "speedup": base / s["seconds_per_image"], "macs_ratio": 1.0 if m.kind == "uncached" else macs,
                     "counted_macs_ratio": _ratio(s.get("counted_macs"), scores[UNCACHED].get("counted_macs"))})
    return rows


def _ratio(value, full):
    return value / full if value is not None and full else None


def comparison_table(rows: list[dict]) -> str:
    """The rows as aligned text, uncached first, then fastest first."""
    rows = sorted(rows, key=lambda r: (r["kind"] != "uncached", -r["speedup"]))
    has_lpips = any(r.get("lpips") is not None for r in rows)
    lines = [f"{'method':<34} {'kind':<8} {'speedup':>7} {'s/image':>8} {'MACs':>6} {'counted':>7} {'quality':>8} "
             f"{'psnr':>6} {'ssim':>6}"
             + (f" {'lpips':>6}" if has_lpips else "")]
    for r in rows:
        line = (f"{r['method']:<34} {r['kind']:<8} {r['speedup']:>6.2f}x {r['seconds_per_image']:>8.3f} "
                f"{_num(r['macs_ratio'], 6, 3)} {_num(r.get('counted_macs_ratio'), 7, 3)} {_num(r['quality'], 8, 3)} "
                f"{_num(r['psnr'], 6, 2)} {_num(r['ssim'], 6, 3)}")
        lines.append(line + (f" {_num(r.get('lpips'), 6, 3)}" if has_lpips else ""))
    return "\n".join(lines)


def _num(value, width: int, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def write_comparison(rows: list[dict], folder: str | Path, title: str = "caching methods") -> list[Path]:
    """`methods.parquet` (one row per method) and `speed_vs_quality.png` in `folder` (atomic)."""
    import pyarrow as pa

    from ecad_ray.atomic import write_table_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=_schema())
    write_table_atomic(table, folder / METHODS_FILE)
    return [folder / METHODS_FILE, plot_comparison(rows, folder / PLOT_FILE, title)]


def _schema():
    import pyarrow as pa

    text = ("method", "kind", "objective")
    numbers = ("quality", "psnr", "ssim", "lpips", "seconds_per_image", "speedup", "macs_ratio", "counted_macs_ratio")
    return pa.schema([pa.field(n, pa.string()) for n in text] + [pa.field(n, pa.float64()) for n in numbers])


def plot_comparison(rows: list[dict], path: Path, title: str) -> Path:
    """Quality (left) and PSNR to the uncached images (right) against measured speedup (top) and
    against the MACs each run computed (bottom, the load-free cost), one marker per kind."""
    from matplotlib.figure import Figure

    style = {"uncached": ("k", "*"), "schedule": ("C2", "o"), "searched": ("C3", "P"), "peer": ("C0", "s")}
    xs = [("speedup", "speedup (measured s/image vs uncached)")]
    if any(r.get("counted_macs_ratio") for r in rows):
        xs.append(("counted_macs_ratio", "MACs computed / uncached (counted)"))
    ys = [("quality", f"quality ({rows[0].get('objective') or 'objective'})"), ("psnr", "PSNR to uncached (dB)")]
    fig = Figure(figsize=(10, 4.0 * len(xs)))
    axes = fig.subplots(len(xs), 2, squeeze=False)
    for (xkey, xlabel), line in zip(xs, axes):
        for (ykey, ylabel), ax in zip(ys, line):
            for kind in KINDS:
                mine = [r for r in rows if r["kind"] == kind and r.get(ykey) is not None and r.get(xkey) is not None
                        and not (ykey == "psnr" and r[ykey] >= PSNR_CAP)]  # identical images: off the scale
                if mine:
                    color, marker = style[kind]
                    ax.scatter([r[xkey] for r in mine], [r[ykey] for r in mine], color=color, marker=marker, label=kind)
                    for r in mine if len(mine) <= LABELLED else ():  # a big front: markers only
                        ax.annotate(r["method"][:22], (r[xkey], r[ykey]), fontsize=6, xytext=(3, 2),
                                    textcoords="offset points")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path
