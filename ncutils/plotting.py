"""One shared figure style; every plotting function returns a matplotlib Figure.

Also the small glue between chapters and the book: :func:`glue` (MyST-NB's glue when it is
installed, a no-op elsewhere, e.g. on Colab) and :func:`provenance_table` (which preset, device,
commit and wall time a figure comes from).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["STYLE", "use_style", "new_figure", "glue", "provenance_table", "metric_panels"]

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
    plt.close(fig)  # shown once, as the cell's value, not again by the inline backend at cell end
    return fig, axes


def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for ``{glue:text}`` in the book; a plain return off the book."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or a bare Python: nothing to glue into
        return value
    _glue(name, value, display=display)
    return value


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


ARCH_COLORS = {"mlp": "C0", "cnn": "C1", "resnet18": "C2", "vgg11": "C3"}
DATASET_NAMES = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "camvid": "CamVid"}


def metric_panels(histories: dict, keys, ylabel: str, logy: bool = True, logx: bool = True,
                  tpt: dict | None = None, styles=("-", "--"), shade: dict | None = None):
    """One panel per dataset, one colour per architecture, one line style per metric key.

    ``histories`` maps ``(dataset, arch)`` to a history DataFrame; rows where a key is NaN (epochs
    without a snapshot) are skipped; ``tpt`` maps ``(dataset, arch)`` to the TPT onset epoch;
    ``shade`` maps ``(dataset, arch)`` to the first epoch from which the training error stays zero,
    drawn as a shaded span from there to the last epoch.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    datasets = list(dict.fromkeys(d for d, _ in histories))
    fig, axes = new_figure(len(datasets), 1, width=3.4, height=2.7)
    for ax, dataset in zip(axes[0], datasets):
        for (ds, arch), hist in histories.items():
            if ds != dataset:
                continue
            color = ARCH_COLORS.get(arch)
            for key, style in zip(keys, styles):
                part = hist[["epoch", key]].dropna()
                label = arch if len(keys) == 1 else f"{arch}, {key.split('_')[-1]}"
                ax.plot(part["epoch"], part[key], style, color=color, label=label, marker=".", ms=3)
            if tpt and tpt.get((ds, arch)):
                ax.axvline(tpt[(ds, arch)], color=color, ls=":", lw=1)
            if shade and shade.get((ds, arch)):
                ax.axvspan(shade[(ds, arch)], hist["epoch"].iloc[-1], color=color, alpha=0.07, lw=0)
        ax.set(title=DATASET_NAMES.get(dataset, dataset), xlabel="epoch", ylabel=ylabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
    axes[0][0].legend(loc="best")
    return fig
