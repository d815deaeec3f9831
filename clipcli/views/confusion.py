"""Confusion matrices as heatmap PNGs: a row per true class, a column per predicted one, each
cell coloured by its share of the row, so that a class with few photos reads as clearly as a
large one. matplotlib is imported only to draw one: every other command starts without it."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from clipcli.atomic_files import write_file
from clipcli.views.drawn_text import drawable

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.axes import Axes

DPI = 100
COUNTS_UP_TO = 20  # classes; past that the numbers no longer fit in the cells
LABEL_CHARACTERS = 40  # a longer class name is cut, so the matrix keeps most of the picture
COLOUR_MAP = "Blues"
INK = "#222222"
FAINT_INK = "#bbbbbb"  # for the zeros, which a matrix of many classes is mostly made of


def write_confusion_png(
    labels: Sequence[str],
    confusion: Sequence[Sequence[int]],
    out: Path,
    *,
    title: str | None = None,
) -> tuple[int, int]:
    """Draw `confusion[true][predicted]` (counts, in the order of `labels`) as a PNG at
    `out`, replaced whole, and return its (width, height) in px.

    The picture grows with the number of classes and its text shrinks, so that ~50 classes
    stay readable; labels and title are drawn literally ("$x$" is not mathematics).
    Raises ValueError for a matrix that is not len(labels) square of counts, ClipcliError
    when `out` cannot be written.
    """
    counts = _counts(labels, confusion)
    data = _render(labels, counts, title)
    write_file(out, data, what="the confusion plot")
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def row_shares(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Each row divided by its sum: the share of a true class given each prediction. A class
    with no photos keeps a row of zeros instead of dividing by zero."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.zeros(counts.shape, dtype=np.float64)
    np.divide(counts, totals, out=shares, where=totals > 0)
    return shares


def _counts(labels: Sequence[str], confusion: Sequence[Sequence[int]]) -> npt.NDArray[np.int64]:
    size = len(labels)
    if size == 0:
        raise ValueError("a confusion matrix needs at least one class")
    if len(confusion) != size or any(len(row) != size for row in confusion):
        raise ValueError(f"a confusion matrix of {size} classes needs {size} rows of {size}")
    counts = np.array(confusion, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("a confusion matrix holds counts, never below zero")
    return counts


def _render(labels: Sequence[str], counts: npt.NDArray[np.int64], title: str | None) -> bytes:
    from matplotlib import style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = len(labels)
    side = max(4.0, 1.5 + 0.32 * size)  # inches: about a third of an inch per class
    font_size = min(10.0, max(6.0, 12.0 - size / 5))
    # The default style, not the user's matplotlibrc: the same picture everywhere, and
    # never usetex (which would need LaTeX, and read labels as TeX).
    with style.context("default"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure = Figure(figsize=(side, side), dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        shares = row_shares(counts)
        picture = axes.imshow(shares, cmap=COLOUR_MAP, vmin=0.0, vmax=1.0)
        colour_bar = figure.colorbar(picture, ax=axes, fraction=0.046, pad=0.04)
        colour_bar.set_label("share of the true class", fontsize=font_size)
        colour_bar.ax.tick_params(labelsize=font_size)
        _label_axes(axes, labels, font_size)
        if size <= COUNTS_UP_TO:
            _write_counts(axes, counts, shares, font_size)
        if title is not None:
            axes.set_title(drawable(title), fontsize=font_size + 2, parse_math=False)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _label_axes(axes: Axes, labels: Sequence[str], font_size: float) -> None:
    names = [_shortened(drawable(label)) for label in labels]
    positions = list(range(len(labels)))
    literal = {"fontsize": font_size, "parse_math": False}
    # Upright names would overlap; past a screenful of classes, 45° ones would too.
    if len(labels) <= COUNTS_UP_TO:
        slant = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"}
    else:
        slant = {"rotation": 90}
    axes.set_xticks(positions, names, **literal, **slant)
    axes.set_yticks(positions, names, **literal)
    axes.set_xlabel("predicted", fontsize=font_size + 1)
    axes.set_ylabel("true", fontsize=font_size + 1)


def _write_counts(
    axes: Axes,
    counts: npt.NDArray[np.int64],
    shares: npt.NDArray[np.float64],
    font_size: float,
) -> None:
    for (row, column), count in np.ndenumerate(counts):
        colour = _ink(int(count), float(shares[row, column]))
        axes.text(
            column, row, str(count), ha="center", va="center", color=colour, fontsize=font_size
        )


def _ink(count: int, share: float) -> str:
    if count == 0:
        return FAINT_INK
    return "white" if share > 0.5 else INK  # white on the dark half of the colour map


def _shortened(label: str) -> str:
    if len(label) <= LABEL_CHARACTERS:
        return label
    return label[: LABEL_CHARACTERS - 1].rstrip() + "\u2026"
