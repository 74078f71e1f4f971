"""Plots for experiments: matplotlib when installed (`plot` extra), else a built-in PNG writer.

The built-in writer needs only numpy and zlib, so `pip install jaxsolve && jaxsolve run` writes a
PNG on a bare machine; it draws axes, gridlines, tick values, series, a legend and the titles
with a small bitmap font. Install the `plot` extra for publication-quality figures.
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
        _raster(path, clean, logx, logy, lines=True, title=title, xlabel=xlabel, ylabel=ylabel)
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
        _raster(path, series, False, False, lines=False, title=title)
    return path.name


# A 3x5 bitmap font (each row: 3 bits, 4 = left column) so that the built-in writer can label
# its plots; lower case is drawn as upper case.
_GLYPHS = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
    "A": (2, 5, 7, 5, 5),
    "B": (6, 5, 6, 5, 6),
    "C": (3, 4, 4, 4, 3),
    "D": (6, 5, 5, 5, 6),
    "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4),
    "G": (3, 4, 5, 5, 3),
    "H": (5, 5, 7, 5, 5),
    "I": (7, 2, 2, 2, 7),
    "J": (1, 1, 1, 5, 2),
    "K": (5, 5, 6, 5, 5),
    "L": (4, 4, 4, 4, 7),
    "M": (5, 7, 7, 5, 5),
    "N": (6, 5, 5, 5, 5),
    "O": (2, 5, 5, 5, 2),
    "P": (6, 5, 6, 4, 4),
    "Q": (2, 5, 5, 6, 3),
    "R": (6, 5, 6, 5, 5),
    "S": (3, 4, 2, 1, 6),
    "T": (7, 2, 2, 2, 2),
    "U": (5, 5, 5, 5, 7),
    "V": (5, 5, 5, 5, 2),
    "W": (5, 5, 7, 7, 5),
    "X": (5, 5, 2, 5, 5),
    "Y": (5, 5, 2, 2, 2),
    "Z": (7, 1, 2, 4, 7),
    ".": (0, 0, 0, 0, 2),
    ",": (0, 0, 0, 2, 4),
    "-": (0, 0, 7, 0, 0),
    "+": (0, 2, 7, 2, 0),
    "(": (1, 2, 2, 2, 1),
    ")": (4, 2, 2, 2, 4),
    "/": (1, 1, 2, 4, 4),
    ":": (0, 2, 0, 2, 0),
    "=": (0, 7, 0, 7, 0),
    "_": (0, 0, 0, 0, 7),
    "%": (5, 1, 2, 4, 5),
    " ": (0, 0, 0, 0, 0),
    "|": (2, 2, 2, 2, 2),
    "^": (2, 5, 0, 0, 0),
    "*": (0, 5, 2, 5, 0),
    "<": (1, 2, 4, 2, 1),
    ">": (4, 2, 1, 2, 4),
    "[": (3, 2, 2, 2, 3),
    "]": (6, 2, 2, 2, 6),
    "?": (7, 1, 2, 0, 2),
}
_SCALE = 2
_CHAR_W = 4 * _SCALE


def _text(img, x, y, text, colour=(0, 0, 0)):
    """Draw `text` with its top-left corner at pixel (x, y)."""
    h, w, _ = img.shape
    for k, char in enumerate(str(text).upper()):
        rows = _GLYPHS.get(char, _GLYPHS["?"])
        for r, bits in enumerate(rows):
            for c in range(3):
                if bits & (4 >> c):
                    x0, y0 = x + k * _CHAR_W + c * _SCALE, y + r * _SCALE
                    if 0 <= x0 < w - _SCALE and 0 <= y0 < h - _SCALE:
                        img[y0 : y0 + _SCALE, x0 : x0 + _SCALE] = colour


def _tick_label(value: float, log: bool) -> str:
    return f"{10.0**value:.2g}" if log else f"{value:.3g}"


def _raster(
    path: Path,
    series,
    logx: bool,
    logy: bool,
    *,
    lines: bool,
    title="",
    xlabel="",
    ylabel="",
    size=(720, 480),
) -> None:
    width, height = size
    left, right, top, bottom = 70, 190, 40, 50
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
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x, y):
        return left + (x - x0) / (x1 - x0) * plot_w, top + plot_h - (y - y0) / (y1 - y0) * plot_h

    grey = np.array([220, 220, 220], np.uint8)
    for k in range(6):
        gx = int(round(left + k / 5 * plot_w))
        gy = int(round(top + plot_h - k / 5 * plot_h))
        img[top : top + plot_h + 1, gx] = grey
        img[gy, left : left + plot_w + 1] = grey
        xlabel_k = _tick_label(x0 + k / 5 * (x1 - x0), logx)
        _text(img, gx - len(xlabel_k) * _CHAR_W // 2, top + plot_h + 8, xlabel_k)
        ylabel_k = _tick_label(y0 + k / 5 * (y1 - y0), logy)
        _text(img, left - 6 - len(ylabel_k) * _CHAR_W, gy - 5, ylabel_k)
    img[top + plot_h, left : left + plot_w + 1] = 0
    img[top : top + plot_h + 1, left] = 0
    _text(img, (width - len(title) * _CHAR_W) // 2, 10, title)
    _text(img, left + (plot_w - len(xlabel) * _CHAR_W) // 2, height - 20, xlabel)
    _text(img, 6, top - 16, ylabel)

    for index, (x, y) in enumerate(zip(xs, ys, strict=True)):
        colour = np.array(_COLOURS[index % len(_COLOURS)], np.uint8)
        ok = np.isfinite(x) & np.isfinite(y)
        px, py = to_px(x[ok], y[ok])
        for a, b in zip(px, py, strict=True):
            _dot(img, a, b, colour, 2)
        if lines and px.size > 1:
            for a0, b0, a1, b1 in zip(px[:-1], py[:-1], px[1:], py[1:], strict=True):
                steps = int(max(abs(a1 - a0), abs(b1 - b0))) + 1
                for t in np.linspace(0.0, 1.0, steps):
                    _dot(img, a0 + t * (a1 - a0), b0 + t * (b1 - b0), colour, 1)
        key_x, key_y = width - right + 12, top + 16 * index
        img[key_y : key_y + 8, key_x : key_x + 14] = colour
        _text(img, key_x + 20, key_y - 1, list(series)[index][:20])
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
