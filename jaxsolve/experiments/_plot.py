"""Figures for the experiments, drawn with matplotlib's object API.

Every figure is a `matplotlib.figure.Figure` saved with `fig.savefig`: no `pyplot`, no global
state and no `matplotlib.use(...)`, so running an experiment inside a notebook leaves the user's
backend and open figures alone (pyplot would also keep each figure alive until closed).

Series are told apart by colour, marker and line style together: a plot of twenty samplers
would otherwise reuse the ten colours of the default cycle, and two curves of one colour read as
one method.
"""

from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

# The ten colours of matplotlib's "tab10" cycle, written out so that styles do not depend on the
# user's rcParams.
_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Seven markers (7 is coprime to 10) and four line styles.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", "-.", ":")
# Legends with more entries than this go beside the axes instead of over the curves.
_LEGEND_INSIDE_MAX = 6
# Series longer than this get spaced markers (a marker on each of 1000 points is a thick line).
_MARKERS_PER_SERIES = 12


def series_style(index: int) -> dict:
    """The look of the `index`-th series of a plot: a colour, a marker and a line style.

    The colour cycles with period 10 and the marker with period 7, so no two of the first 70
    series share both. The line style cycles too (so that a curve drawn over another, a solver
    over its exact solution, still shows) and skips one more on each pass through the colours,
    so two series of one colour also differ in line style (for up to 40 series).

    **Arguments:**

    - `index`: the series' position in the plot, from 0.

    **Returns:** keyword arguments for `Axes.plot` (`color`, `marker`, `linestyle`).
    """
    return {
        "color": _COLOURS[index % len(_COLOURS)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "linestyle": _LINESTYLES[(index + index // len(_COLOURS)) % len(_LINESTYLES)],
    }


def line_plot(
    path,
    series: dict,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
    ylim: tuple[float | None, float | None] | None = None,
) -> str:
    """Write a line plot to `path` (PNG).

    **Arguments:**

    - `path`: the PNG file to write.
    - `series`: name -> `(x, y)`, one line each, styled by `series_style`. Non-finite points
      (and non-positive ones on a log axis) are left out, not drawn as zero.
    - `title`, `xlabel`, `ylabel`: the labels.
    - `logx`, `logy`: logarithmic axes (for errors and costs that span decades).
    - `ylim`: `(bottom, top)` to clip the y axis (either may be None), so that one diverging
      series does not squash the others; its line then leaves the plot at the edge.

    **Returns:** the file name (relative to the run folder).
    """
    path = Path(path)
    width = 6.4 if len(series) <= _LEGEND_INSIDE_MAX else 6.4 + 2.2 * _legend_columns(series)
    fig = Figure(figsize=(width, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for index, (name, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        if logx:
            keep &= x > 0
        if logy:
            keep &= y > 0
        x, y = x[keep], y[keep]
        # Long series get markers evenly spaced along the drawn line (a fraction of the axes
        # diagonal, so also on log axes), offset per series so that markers of overlapping
        # curves do not sit on top of each other.
        markevery = None if x.size <= _MARKERS_PER_SERIES else (0.015 * (index % 5), 0.08)
        ax.plot(
            x,
            y,
            label=name,
            markersize=4,
            linewidth=1.3,
            markevery=markevery,
            **series_style(index),
        )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logx:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    if logy:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, which="major", alpha=0.35)
    if logx or logy:
        ax.grid(True, which="minor", alpha=0.12)
    if len(series) > 1:
        if len(series) <= _LEGEND_INSIDE_MAX:
            ax.legend(fontsize=8)
        else:
            fig.legend(
                loc="outside right upper",
                fontsize=7.5,
                ncols=_legend_columns(series),
                frameon=False,
            )
    fig.savefig(path, dpi=110)
    return path.name


def scatter_plot(path, groups: dict, *, title: str = "") -> str:
    """Write one scatter panel per group to `path` (PNG), side by side on shared axes.

    **Arguments:**

    - `path`: the PNG file to write.
    - `groups`: name -> an `(N, 2)` array of points (a panel titled `name`).
    - `title`: the figure's title.

    **Returns:** the file name (relative to the run folder).
    """
    path = Path(path)
    clean = {name: np.asarray(points, float).reshape(-1, 2) for name, points in groups.items()}
    fig = Figure(figsize=(3.0 * len(clean), 3.4), layout="constrained")
    # Shared axes: the panels are compared with each other (samples against data), so a
    # different zoom per panel would hide exactly the differences that matter.
    axes = fig.subplots(1, len(clean), squeeze=False, sharex=True, sharey=True)[0]
    for index, (ax, (name, points)) in enumerate(zip(axes, clean.items(), strict=True)):
        ax.scatter(
            points[:, 0],
            points[:, 1],
            s=4,
            alpha=0.6,
            color=series_style(index)["color"],
            linewidths=0,
        )
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path.name


def _plain_log_ticks(axis) -> None:
    """On a log axis spanning less than three decades, ticks at 1, 2 and 5 times powers of ten
    labelled as plain numbers (5, 10, 20, 50), not as powers (5 x 10^0): step and NFE axes."""
    low, high = axis.get_view_interval()
    if low > 0 and high / low < 1e3:
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _legend_columns(series: dict) -> int:
    return 1 if len(series) <= 16 else 2
