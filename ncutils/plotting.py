"""One shared figure and table style for the book; every plotting function returns a matplotlib Figure.

Figures: :func:`new_figure` sizes every figure to the book's content column (at most
:data:`MAX_WIDTH` inches, about 770 px at :data:`STYLE`'s 110 dpi, so the fonts render at their
nominal size: tick labels 8.5 pt), legends draw line styles long enough to tell solid from dashed,
and :func:`figure_legend` puts a legend under the panels instead of over the data. seaborn draws
what it draws best: :func:`cosine_heatmap` (annotated cosine matrices) and :func:`seed_points`
(one point per seed with the mean and its 95% t-interval).

Tables: :func:`style_table` (compact padding, precision by column kind, human headers, no index,
wrapping headers) and :func:`provenance_table` (which preset, device, commit, date and wall time a
figure comes from; runs started from a tree with uncommitted changes are flagged).

Also the small glue between chapters and the book: :func:`glue` (MyST-NB's glue when it is
installed, a no-op elsewhere, e.g. on Colab) and :func:`display_label` (a run label for readers).
"""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["STYLE", "MAX_WIDTH", "use_style", "new_figure", "figure_legend", "glue", "display_label",
           "human_header", "short_device", "style_table", "provenance_frame", "provenance_table",
           "DIRTY_NOTE", "metric_panels", "cosine_heatmap", "seed_points", "t_interval"]

# 7 inches at 110 dpi = 770 px: the width of the book's content column at a 1400 px window, so
# figures are shown at 1:1 and their fonts at their nominal size.
MAX_WIDTH = 7.0
STYLE = {
    "figure.dpi": 110, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 9.5,
    "axes.labelsize": 9, "legend.fontsize": 8.5, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5,
    "legend.handlelength": 3.0, "legend.framealpha": 0.85, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.5,
    "figure.constrained_layout.use": True,
}
LINESTYLES = ("-", "--", ":", "-.")


def use_style() -> None:
    plt.rcParams.update(STYLE)


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.2, height: float = 2.6, **kw):
    """A figure of ``nrows x ncols`` panels, each about ``width x height`` inches, in the book's style.

    The whole figure is at most :data:`MAX_WIDTH` inches wide (panels are scaled down together
    with their height), so that it is shown unscaled in the content column and its fonts stay legible.
    """
    use_style()
    scale = min(1.0, MAX_WIDTH / (width * ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols * scale, height * nrows * scale),
                             squeeze=False, **kw)
    plt.close(fig)  # shown once, as the cell's value, not again by the inline backend at cell end
    return fig, axes


def figure_legend(fig, handles=None, labels=None, ax=None, ncol: int | None = None, **kw):
    """One legend under all panels (outside the data); handles from ``ax`` (default: the first axes)."""
    if handles is None:
        ax = ax or fig.axes[0]
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    ncol = ncol or min(len(handles), 4)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, **kw)


def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for ``{glue:text}`` in the book; a plain return off the book."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or a bare Python: nothing to glue into
        return value
    _glue(name, value, display=display)
    return value


# ----------------------------------------------------------------------------- labels and headers
ARCH_COLORS = {"mlp": "C0", "cnn": "C1", "resnet18": "C2", "vgg11": "C3"}
DATASET_NAMES = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "camvid": "CamVid",
                 "cifar10": "CIFAR10"}
ARCH_NAMES = {"mlp": "MLP", "cnn": "CNN", "resnet18": "ResNet18", "vgg11": "VGG11"}

HEADERS = {
    "nc1": "NC1", "nc1_trace_ratio": "Tr ΣW / Tr ΣB", "cdnv": "CDNV",
    "equinorm_means": "equinorm (means)", "equinorm_classifiers": "equinorm (classifier)",
    "equiangular_means": "equiangular (means)", "equiangular_classifiers": "equiangular (classifier)",
    "maxangle_means": "max-angle gap (means)", "maxangle_classifiers": "max-angle gap (classifier)",
    "self_duality": "self-duality", "ncc_mismatch": "NCC mismatch",
    "grad_norm": "gradient norm", "w_norm_sq": "‖w‖²", "min_eig": "smallest eigenvalue",
    "max_eig": "largest eigenvalue", "n_neg": "negative eigenvalues", "n_zero": "zero eigenvalues",
    "wall_seconds": "wall time (s)",
}


def human_header(name) -> str:
    """A column name for readers: known metric keys spelled out, snake_case turned into words."""
    if not isinstance(name, str):
        return str(name)
    return HEADERS.get(name, name.replace("_", " ") if "_" in name and " " not in name else name)


def display_label(label: str) -> str:
    """A run label as a reader reads it: ``mnist-learned-ddefault-s0`` -> ``MNIST, learned, default d, seed 0``.

    Only the display changes: the stored label is part of a run's folder name and stays as it is.
    """
    if not label:
        return ""
    words = []
    for tok in str(label).split("-"):
        if re.fullmatch(r"s\d+", tok):
            words.append(f"seed {tok[1:]}")
        elif tok == "ddefault":
            words.append("default d")
        elif re.fullmatch(r"d\d+", tok):
            words.append(f"d = {tok[1:]}")
        elif re.fullmatch(r"lam[\d.]+", tok):
            words.append(f"λ = {tok[3:]}")
        else:
            words.append(DATASET_NAMES.get(tok, ARCH_NAMES.get(tok, tok)))
    return ", ".join(words)


def short_device(device: str) -> str:
    """``CPU: Intel(R) Xeon(R) Processor (2 cores)`` -> ``CPU, Xeon (2 cores)``; ``NVIDIA H200`` -> ``H200``."""
    text = str(device)
    cpu = text.startswith("CPU")
    text = re.sub(r"^CPU:\s*", "", text)
    text = re.sub(r"\((R|TM|tm|r)\)", "", text)
    text = re.sub(r"@\s*[\d.]+\s*GHz", "", text)
    text = re.sub(r"\b(Intel|AMD|NVIDIA|Processor|CPU|Core|Genuine|with Radeon Graphics)\b", "", text)
    text = re.sub(r"\s+", " ", text).strip(" ,")
    return f"CPU, {text}" if cpu else text


# ----------------------------------------------------------------------------- tables
def _format_number(x, digits: int = 3) -> str:
    """Integers with thousands separators, other numbers to ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e7:
        return f"{int(x):,}"
    ax = abs(float(x))
    if 1e-3 <= ax < 1e5:
        return f"{float(x):.{digits}g}"
    return f"{float(x):.{max(digits - 1, 1)}e}"


TABLE_CSS = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0;"},
    {"selector": "th", "props": "padding: 0.25em 0.6em; text-align: right; white-space: normal; "
                                "vertical-align: bottom; border-bottom: 1px solid #999; font-weight: 600;"},
    {"selector": "td", "props": "padding: 0.2em 0.6em; text-align: right; white-space: nowrap;"},
    {"selector": "caption", "props": "caption-side: bottom; text-align: left; font-size: 0.9em; "
                                     "color: #555; padding-top: 0.3em;"},
]


def style_table(frame, digits: int = 3, percent=(), formats: dict | None = None, caption: str | None = None,
                headers: dict | None = None, index: bool = False, na_rep: str = "", max_columns: int = 8):
    """A compact pandas Styler: cell padding, numbers by column kind, human headers, no index.

    Integer-valued numbers get thousands separators, other numbers ``digits`` significant digits
    (scientific outside [1e-3, 1e5)), ``percent`` columns (fractions) are shown as percentages with
    one decimal, ``formats`` maps a column to a format string or callable. Headers go through
    :func:`human_header` (or ``headers``) and wrap; text columns are left-aligned and wrap. More than
    ``max_columns`` columns is refused: that table does not fit the content column (split it).
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.shape[1] + bool(index) > max_columns:
        raise ValueError(f"{frame.shape[1]} columns do not fit the content column (max_columns={max_columns}): "
                         f"show fewer, or split the table; columns: {list(frame.columns)}")
    formats = dict(formats or {})
    missing = [c for c in list(percent) + list(formats) if c not in frame.columns]
    if missing:
        raise ValueError(f"percent/formats name columns that the frame lacks: {missing}")
    frame = frame.copy()
    names = {c: (headers or {}).get(c, human_header(c)) for c in frame.columns}
    fmt = {}
    for col in frame.columns:
        if col in formats:
            fmt[names[col]] = formats[col]
        elif col in percent:
            fmt[names[col]] = lambda x: "" if pd.isna(x) else f"{100 * float(x):.1f}%"
        else:
            fmt[names[col]] = lambda x, d=digits: _format_number(x, d)
    frame = frame.rename(columns=names)
    text_cols = [col for col in frame.columns if not pd.api.types.is_numeric_dtype(frame[col])
                 and not frame[col].map(lambda v: isinstance(v, (int, float, np.number))).all()]
    # text columns: left-aligned and wrapping (a column-class selector, so it outranks ``td`` above)
    css = TABLE_CSS + [{"selector": f"{cell}.col{i}", "props": "text-align: left; white-space: normal;"}
                       for i, col in enumerate(frame.columns) if col in text_cols for cell in ("td", "th")]
    styler = frame.style.format(fmt, na_rep=na_rep).set_table_styles(css)
    if not index:
        styler = styler.hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    return styler


DIRTY_NOTE = ("“+dirty” after a commit means the run started from a working tree whose `ncutils/` "
              "had uncommitted changes: the commit alone does not pin the code that ran.")


def provenance_frame(runs):
    """One row per run: run (as a reader reads it), preset, short device, short commit, torch,
    date (UTC) and wall time in minutes; ``dirty`` is True for runs started from a tree with
    uncommitted changes in ``ncutils/``."""
    import pandas as pd

    rows = []
    for run in runs:
        info = run.info
        commit = str(info.get("commit", "unknown"))
        sha, _, flag = commit.partition("+")
        rows.append({"run": display_label(run.label or run.path.name), "preset": info["preset"],
                     "device": short_device(info["device"]),
                     "commit": sha[:7] + ("+" + flag if flag else ""),
                     "torch": str(info.get("torch", "")).split("+")[0],
                     "date": str(info.get("finished", ""))[:10],
                     "wall time (min)": round(float(info["wall_seconds"]) / 60, 1),
                     "dirty": bool(flag)})
    return pd.DataFrame(rows)


def provenance_table(runs):
    """The compact provenance of ``runs`` as a styled table (no index); dirty runs are flagged in
    the commit column and explained in the caption."""
    frame = provenance_frame(runs)
    if frame.empty:
        return style_table(frame, caption="No runs.")
    n_dirty = int(frame["dirty"].sum())
    caption = None
    if n_dirty:
        caption = (f"{n_dirty} of {len(frame)} runs carry “+dirty”: they started from a working tree "
                   "whose ncutils/ had uncommitted changes, so the commit does not pin the code exactly.")
    styler = style_table(frame.drop(columns="dirty"), caption=caption,
                         formats={"wall time (min)": "{:.1f}"})
    if n_dirty:
        dirty = frame["dirty"].to_numpy()
        styler = styler.apply(lambda col: ["color: #b35900; font-weight: 600" if d else "" for d in dirty],
                              subset=["commit"])
    return styler


# ----------------------------------------------------------------------------- figures
def metric_panels(histories: dict, keys, ylabel: str, logy: bool = True, logx: bool = True,
                  tpt: dict | None = None, styles=LINESTYLES, key_names: dict | None = None,
                  shade: dict | None = None):
    """One panel per dataset, one colour per architecture, one line style per metric key.

    ``histories`` maps ``(dataset, arch)`` to a history DataFrame; rows where a key is NaN (epochs
    without a snapshot) are skipped; ``tpt`` maps ``(dataset, arch)`` to the TPT onset epoch;
    ``shade`` maps ``(dataset, arch)`` to the first epoch from which the training error stays zero,
    drawn as a shaded span from there to the last epoch. The legend, under the panels, has one entry per architecture (colour) and, with several keys, one
    per key (line style).
    """
    from matplotlib.lines import Line2D

    keys = [keys] if isinstance(keys, str) else list(keys)
    datasets = list(dict.fromkeys(d for d, _ in histories))
    fig, axes = new_figure(len(datasets), 1, width=3.4, height=2.7)
    archs = list(dict.fromkeys(a for _, a in histories))
    for ax, dataset in zip(axes[0], datasets):
        for (ds, arch), hist in histories.items():
            if ds != dataset:
                continue
            color = ARCH_COLORS.get(arch)
            for key, style in zip(keys, styles):
                part = hist[["epoch", key]].dropna()
                ax.plot(part["epoch"], part[key], ls=style, color=color, marker=".", ms=3)
            if tpt and tpt.get((ds, arch)):
                ax.axvline(tpt[(ds, arch)], color=color, ls=":", lw=1)
            if shade and shade.get((ds, arch)):
                ax.axvspan(shade[(ds, arch)], hist["epoch"].iloc[-1], color=color, alpha=0.07, lw=0)
        ax.set(title=DATASET_NAMES.get(dataset, dataset), xlabel="epoch", ylabel=ylabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
    handles = [Line2D([], [], color=ARCH_COLORS.get(a), lw=2) for a in archs]
    labels = [ARCH_NAMES.get(a, a) for a in archs]
    if len(keys) > 1:
        names = key_names or {}
        handles += [Line2D([], [], color="0.3", ls=s) for _, s in zip(keys, styles)]
        labels += [names.get(k, human_header(k)) for k in keys]
    if tpt:
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1))
        labels.append("TPT onset")
    if shade:
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.3", alpha=0.15, lw=0))
        labels.append("training error stays 0")
    figure_legend(fig, handles, labels, ncol=min(len(handles), 5))
    return fig


def cosine_heatmap(ax, matrix, labels, title: str = "", annot: bool = True, cbar: bool = False,
                   vmin: float = -1.0, vmax: float = 1.0):
    """An annotated heatmap (seaborn) of a cosine matrix, ``labels`` on both axes; returns the mappable."""
    import seaborn as sns

    mat = np.asarray(matrix, dtype=float)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] != len(labels):
        raise ValueError(f"matrix must be square with one label per row, got shape {mat.shape} "
                         f"and {len(labels)} labels")
    text = np.vectorize(lambda v: "1" if abs(v - 1) < 5e-3 else f"{v:.2f}".replace("0.", ".", 1))(mat)
    size = max(5.5, min(8.0, 70.0 / len(labels)))
    sns.heatmap(mat, ax=ax, cmap="RdBu_r", vmin=vmin, vmax=vmax, center=0.0, square=True,
                annot=text if annot else False, fmt="", annot_kws={"size": size}, cbar=cbar,
                xticklabels=labels, yticklabels=labels, linewidths=0.4, linecolor="white")
    ax.tick_params(axis="x", labelrotation=90, length=0)
    ax.tick_params(axis="y", labelrotation=0, length=0)
    ax.grid(False)
    if title:
        ax.set_title(title)
    return ax.collections[0]


def t_interval(values, level: float = 0.95):
    """``(mean, half-width)`` of the two-sided t-interval of the mean (half-width NaN for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("values must hold at least one finite number")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def seed_points(ax, data, x: str, y: str, hue: str, order=None, hue_order=None, palette=None,
                labels: dict | None = None, dodge: float = 0.4):
    """Per-seed values as points (seaborn strip plot) with the mean over seeds and its 95%
    t-interval as a bar, one group per ``x`` and one colour per ``hue``. ``data`` is long format
    (one row per seed and group)."""
    import seaborn as sns

    order = list(order if order is not None else dict.fromkeys(data[x]))
    hue_order = list(hue_order if hue_order is not None else dict.fromkeys(data[hue]))
    sns.stripplot(data=data, x=x, y=y, hue=hue, order=order, hue_order=hue_order, palette=palette,
                  dodge=True, jitter=0.08, size=3.5, alpha=0.6, ax=ax, legend=False, zorder=1)
    n = len(hue_order)
    width = dodge / max(n, 1)
    for j, h in enumerate(hue_order):
        color = (palette or {}).get(h, f"C{j}") if isinstance(palette, dict) else f"C{j}"
        xs, means, halves = [], [], []
        for i, g in enumerate(order):
            vals = data[(data[x] == g) & (data[hue] == h)][y]
            if len(vals) == 0:
                continue
            m, hw = t_interval(vals)
            xs.append(i + (j - (n - 1) / 2) * width * 2 if n > 1 else i)
            means.append(m)
            halves.append(0.0 if math.isnan(hw) else hw)
        ax.errorbar(xs, means, yerr=halves, fmt="_", ms=12, mew=2, color=color, elinewidth=1.5,
                    capsize=3, zorder=3, label=(labels or {}).get(h, h))
    ax.set_xlabel("")
    return ax
