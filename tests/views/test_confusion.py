"""Confusion-matrix heatmaps: a PNG that grows with the classes, drawn from any labels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipcli.views.confusion import row_shares, write_confusion_png


def matrix(size: int, seed: int = 0) -> list[list[int]]:
    """Mostly right, with a few mistakes scattered off the diagonal."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, (size, size)) + np.diag(rng.integers(10, 40, size))
    return counts.tolist()


def classes(size: int) -> list[str]:
    return [f"class {n}" for n in range(size)]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # the whole picture decodes, not only its header
        return image.size


def test_the_plot_is_a_png_whose_size_is_returned(tmp_path):
    out = tmp_path / "confusion.png"

    size = write_confusion_png(["cat", "dog"], [[8, 2], [1, 9]], out, title="cats and dogs")

    assert png_size(out) == size


def test_the_picture_grows_with_the_number_of_classes(tmp_path):
    sizes = []
    for count in (2, 10, 50):
        out = tmp_path / f"confusion-{count}.png"
        sizes.append(write_confusion_png(classes(count), matrix(count), out))
        assert png_size(out) == sizes[-1]

    (w2, h2), (w10, h10), (w50, h50) = sizes
    assert w2 < w10 < w50 and h2 < h10 < h50
    assert w50 >= 1000  # fifty names, each given room on both axes


def test_a_class_with_no_photos_keeps_a_row_of_zeros(tmp_path):
    confusion = [[5, 1, 0], [0, 0, 0], [2, 0, 7]]

    write_confusion_png(["cat", "dog", "bird"], confusion, tmp_path / "confusion.png")

    shares = row_shares(np.array(confusion))
    assert shares[1].tolist() == [0.0, 0.0, 0.0]
    assert shares[0] == pytest.approx([5 / 6, 1 / 6, 0.0])
    assert shares.sum(axis=1).tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_labels_and_title_are_drawn_literally_not_as_mathematics(tmp_path):
    # Read as mathtext, the second label is an error: \notacommand is no symbol matplotlib knows.
    labels = ["$x$", r"$\notacommand$", "50% off", "two\nlines", "latin1-\udce9"]
    out = tmp_path / "confusion.png"

    size = write_confusion_png(labels, matrix(5), out, title=r"$\frac{a}$ 100$ worth")

    assert png_size(out) == size


def test_the_matrix_must_be_square_with_a_row_per_label(tmp_path):
    with pytest.raises(ValueError, match="2 rows of 2"):
        write_confusion_png(["cat", "dog"], [[1, 2, 3], [4, 5, 6]], tmp_path / "c.png")
    with pytest.raises(ValueError, match="never below zero"):
        write_confusion_png(["cat", "dog"], [[1, -2], [3, 4]], tmp_path / "c.png")
    with pytest.raises(ValueError, match="at least one class"):
        write_confusion_png([], [], tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_importing_the_module_does_not_import_matplotlib():
    code = "import clipcli.views.confusion, sys; assert 'matplotlib' not in sys.modules"

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
