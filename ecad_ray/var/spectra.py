"""Plots of the DFT spectra a VAR run saved (`<item>/spectra/*.npy`), one PNG per item and domain.

Rows are the kinds (summed, residual, unscaled), columns the scales; each panel is the
centred log-magnitude spectrum. A last row plots the radially averaged spectrum of every
scale, so the high-frequency energy each scale adds can be compared at a glance.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ecad_ray.errors import UserError

_NAME = re.compile(r"scale(\d+)_w(\d+)_(pixel|latent)_(summed|residual|unscaled)\.npy$")
KINDS = ("summed", "residual", "unscaled")


def radial_profile(spec_HW: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Mean of a centred spectrum over rings of growing radius (0 = lowest frequency).

    Rings default to one per frequency step (side // 2 + 1); empty rings are NaN."""
    H, W = spec_HW.shape
    bins = bins or max(2, min(H, W) // 2 + 1)
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - H // 2, xx - W // 2)
    r = r / max(r.max(), 1e-9)
    idx = np.minimum((r * bins).astype(int), bins - 1)
    sums = np.bincount(idx.ravel(), spec_HW.ravel(), minlength=bins)
    counts = np.bincount(idx.ravel(), minlength=bins).astype(float)
    counts[counts == 0] = np.nan
    return sums / counts


def collect(spectra_dir: Path) -> dict[str, dict[tuple[str, int, int], np.ndarray]]:
    """domain -> {(kind, scale, width): spectrum}."""
    out: dict[str, dict] = defaultdict(dict)
    for f in sorted(spectra_dir.glob("*.npy")):
        m = _NAME.search(f.name)
        if m:
            si, w, domain, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            out[domain][(kind, si, w)] = np.load(f, allow_pickle=False)
    return out


def plot_item(spectra_dir: Path, out_dir: Path) -> list[Path]:
    """One PNG per domain for one item's spectra folder; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ecad_ray.atomic import write_bytes_atomic

    written = []
    for domain, specs in collect(spectra_dir).items():
        scales = sorted({(si, w) for _, si, w in specs})
        kinds = [k for k in KINDS if any(key[0] == k for key in specs)]
        fig, axes = plt.subplots(len(kinds) + 1, len(scales), figsize=(1.8 * len(scales), 1.8 * (len(kinds) + 1)),
                                 squeeze=False)
        for col, (si, w) in enumerate(scales):
            for row, kind in enumerate(kinds):
                ax = axes[row][col]
                ax.axis("off")
                if (kind, si, w) in specs:
                    ax.imshow(specs[(kind, si, w)], cmap="magma")
                if row == 0:
                    ax.set_title(f"scale {si} (w{w})", fontsize=7)
                if col == 0:
                    ax.text(-0.1, 0.5, kind, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=7)
            ax = axes[len(kinds)][col]
            for kind in kinds:
                if (kind, si, w) in specs:
                    ax.plot(radial_profile(specs[(kind, si, w)]), label=kind)
            ax.tick_params(labelsize=5)
            if col == 0:
                ax.legend(fontsize=5)
        fig.suptitle(f"{spectra_dir.parent.name}: {domain} log|DFT|", fontsize=8)
        fig.tight_layout()
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        target = out_dir / f"{spectra_dir.parent.name}__{domain}.png"
        write_bytes_atomic(target, buf.getvalue())
        written.append(target)
    return written


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Plot every item of a `var generate --spectra` run; PNGs go to `<run>/spectra_plots/`."""
    run_dir = Path(run_dir)
    folders = sorted(p for p in run_dir.glob("*/spectra") if p.is_dir())
    if not folders:
        raise UserError(f"{run_dir}: no <item>/spectra/ folders (generate with --spectra)")
    out = Path(out_dir) if out_dir else run_dir / "spectra_plots"
    written = []
    for folder in folders:
        written += plot_item(folder, out)
    return written
