"""One shared figure style; every plotting function returns a matplotlib Figure.

Also the small glue between chapters and the book: :func:`glue` (MyST-NB's glue when it is
installed, a no-op elsewhere, e.g. on Colab) and :func:`provenance_table` (which preset, device,
commit and wall time a figure comes from).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["STYLE", "use_style", "new_figure", "glue", "provenance_table", "mark_tpt"]

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "lines.linewidth": 1.5, "figure.constrained_layout.use": True,
}


def use_style() -> None:
    plt.rcParams.update(STYLE)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.2, height: float = 2.6, **kw):
    """A figure of ``nrows x ncols`` panels, each ``width x height`` inches, in the book's style."""
    use_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes


def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for ``{glue:text}`` in the book; a plain return off the book."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or a bare Python: nothing to glue into
        return value
    _glue(name, value, display=display)
    return value


def mark_tpt(ax, epoch, label: bool = True) -> None:
    """Mark the onset of the terminal phase of training (first epoch with zero train error)."""
    if epoch is not None:
        ax.axvline(epoch, color="0.5", ls=":", lw=1, label="TPT onset" if label else None)


def provenance_table(runs) -> "object":
    """A pandas DataFrame: one row per run with preset, device, commit, torch and wall time."""
    import pandas as pd

    rows = []
    for run in runs:
        info = run.info
        rows.append({"run": run.label or run.path.name, "preset": info["preset"],
                     "device": info["device"], "commit": info["commit"], "torch": info["torch"],
                     "wall time (min)": round(info["wall_seconds"] / 60, 1),
                     "finished": info["finished"], "config hash": info["config_hash"]})
    return pd.DataFrame(rows)
