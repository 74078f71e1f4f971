"""Plots for experiments: matplotlib when installed (`plot` extra), else a built-in PNG writer.

The built-in writer needs only numpy and zlib, so `pip install jaxsolve && jaxsolve run` writes a
PNG on a bare machine; it draws axes, gridlines, series and a colour key, without text (the
labels are in results.json). Install the `plot` extra for labelled figures.
"""

import math
import struct
import zlib
from pathlib import Path

import numpy as np

_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def line_plot(path, series, *, title="", xlabel="", ylabel="", logx=False, logy=False) -> str:
    """Write a line plot of `series` (name -> (x, y)) to `path` (PNG). Returns the file name."""
    path = Path(path)
    clean = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items()}
    if _have_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for name, (x, y) in clean.items():
            ax.plot(x, y, marker="o", markersize=3, label=name)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if len(clean) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    else:
        _raster(path, clean, logx, logy, lines=True)
    return path.name


def scatter_plot(path, groups, *, title="") -> str:
    """Write a scatter plot of `groups` (name -> (N, 2) array) to `path` (PNG)."""
    path = Path(path)
    clean = {k: np.asarray(v, float) for k, v in groups.items()}
    if _have_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ncols = len(clean)
        fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.4), squeeze=False)
        for ax, (name, pts) in zip(axes[0], clean.items(), strict=True):
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
            ax.set_title(name, fontsize=9)
            ax.set_aspect("equal", adjustable="datalim")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    else:
        series = {k: (v[:, 0], v[:, 1]) for k, v in clean.items()}
        _raster(path, series, False, False, lines=False)
    return path.name


def _raster(path: Path, series, logx: bool, logy: bool, *, lines: bool, size=(640, 440)) -> None:
    width, height = size
    margin = 40
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    def transform(v, log):
        v = np.asarray(v, float)
        return np.log10(np.where(v > 0, v, np.nan)) if log else v

    xs = [transform(x, logx) for x, _ in series.values()]
    ys = [transform(y, logy) for _, y in series.values()]
    allx = np.concatenate([x[np.isfinite(x)] for x in xs] + [np.zeros(0)])
    ally = np.concatenate([y[np.isfinite(y)] for y in ys] + [np.zeros(0)])
    if allx.size == 0 or ally.size == 0:
        allx, ally = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    x0, x1 = float(allx.min()), float(allx.max())
    y0, y1 = float(ally.min()), float(ally.max())
    x1 = x1 if x1 > x0 else x0 + 1.0
    y1 = y1 if y1 > y0 else y0 + 1.0

    def to_px(x, y):
        px = margin + (x - x0) / (x1 - x0) * (width - 2 * margin - 80)
        py = height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin)
        return px, py

    grey = np.array([220, 220, 220], np.uint8)
    for k in range(6):
        gx = int(round(margin + k / 5 * (width - 2 * margin - 80)))
        gy = int(round(height - margin - k / 5 * (height - 2 * margin)))
        img[margin : height - margin + 1, gx] = grey
        img[gy, margin : width - margin - 80 + 1] = grey
    img[height - margin, margin : width - margin - 80 + 1] = 0
    img[margin : height - margin + 1, margin] = 0

    for index, (x, y) in enumerate(zip(xs, ys, strict=True)):
        colour = np.array(_COLOURS[index % len(_COLOURS)], np.uint8)
        ok = np.isfinite(x) & np.isfinite(y)
        px, py = to_px(x[ok], y[ok])
        for a, b in zip(px, py, strict=True):
            _dot(img, a, b, colour, 2)
        if lines and px.size > 1:
            for (a0, b0), (a1, b1) in zip(zip(px[:-1], py[:-1]), zip(px[1:], py[1:]), strict=True):
                steps = int(max(abs(a1 - a0), abs(b1 - b0))) + 1
                for t in np.linspace(0.0, 1.0, steps):
                    _dot(img, a0 + t * (a1 - a0), b0 + t * (b1 - b0), colour, 1)
        key_y = margin + 14 * index
        img[key_y : key_y + 8, width - margin - 60 : width - margin - 40] = colour
    _write_png(path, img)


def _dot(img, x, y, colour, radius):
    h, w, _ = img.shape
    if not (math.isfinite(x) and math.isfinite(y)):
        return
    xi, yi = int(round(x)), int(round(y))
    img[
        max(0, yi - radius + 1) : min(h, yi + radius), max(0, xi - radius + 1) : min(w, xi + radius)
    ] = colour


def _write_png(path: Path, img: np.ndarray) -> None:
    height, width, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)
