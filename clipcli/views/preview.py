"""Thumbnails inline in the terminal, for terminals that speak an image protocol: kitty's
graphics protocol, or sixel (iTerm2, foot, WezTerm, xterm, VS Code...).

textual-image finds out which protocol by asking the terminal, once, when it is first
imported. So it is imported only when stdin and stdout are both a terminal: output piped to a
file or another program never asks (nor waits for an answer), and input piped in, which the
answer would be read from, is no terminal to ask.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from PIL import Image
from rich.console import Console
from rich.text import Text

from clipcli.literal import shown
from clipcli.media.decode import ImageDecodeError
from clipcli.media.thumbnails import THUMBNAIL_SIZE, thumbnail

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.console import ConsoleRenderable

    from clipcli.search import SearchHit

    Renderer = Callable[[Image.Image], ConsoleRenderable]

ImageProtocol = Literal["kitty", "sixel"]

# px on the long side: about eight text rows at a common cell height, so that a screen
# holds a few hits at once.
PREVIEW_SIZE = 160


def image_protocol(stream: TextIO) -> ImageProtocol | None:
    """The image protocol the terminal at `stream` speaks: "kitty" or "sixel" (sixel where it
    speaks both, as textual-image prefers it), or None.

    Asks the terminal (an escape sequence, a tenth of a second at most for each answer) only
    when `stream`, stdin and stdout are all terminals; otherwise returns at once, without
    importing textual-image. The halfcell and unicode-block pictures textual-image falls back
    to are no protocol: they give None too.
    """
    if not all(_is_terminal(s) for s in (stream, sys.__stdin__, sys.__stdout__)):
        return None
    from textual_image import renderable

    if renderable.Image is renderable.TGPImage:
        return "kitty"
    if renderable.Image is renderable.SixelImage:
        return "sixel"
    return None


def write_previews(
    hits: Sequence[SearchHit],
    console: Console,
    *,
    size: int = PREVIEW_SIZE,
    protocol: ImageProtocol | None = None,
) -> None:
    """For each hit, its thumbnail (at most `size` px) inline, then "#rank  score  path".

    `protocol` is the one image_protocol found for the console's stream, asked again when not
    given; a file that cannot be read shows its reason in place of the image. Raises
    ValueError when the console's terminal speaks no image protocol: check it first.
    """
    chosen = protocol or image_protocol(console.file)
    if chosen is None:
        raise ValueError("the console's terminal shows no images; check image_protocol first")
    renderer = _renderer(chosen)
    pictures = console if chosen == "sixel" else _in_truecolour(console)
    for hit in hits:
        try:
            picture = _thumbnail(Path(hit.path), size)
        except ImageDecodeError as exc:
            console.print(Text(f"({shown(exc.reason)})", style="dim"))
        else:
            pictures.print(renderer(picture))
        console.print(Text(f"#{hit.rank}  {hit.score:.3f}  {shown(hit.path)}"))


def _renderer(protocol: ImageProtocol) -> Renderer:
    if protocol == "kitty":
        # kitty's pictures are sent to sys.__stdout__ itself, beside the console's text: the
        # console draws the cells that show them.
        from textual_image.renderable.tgp import Image as KittyImage

        return KittyImage
    from textual_image.renderable.sixel import Image as SixelImage

    return SixelImage


def _in_truecolour(console: Console) -> Console:
    """A console onto the same stream that writes 24-bit colours, whatever the terminal's
    variables claim (tmux and ssh often drop COLORTERM): kitty's cells name the picture they
    show by their colour, which a 256-colour approximation would turn into another picture.
    A terminal that speaks kitty's protocol speaks 24-bit colour too."""
    return Console(
        file=console.file, force_terminal=True, color_system="truecolor", width=console.width
    )


def _thumbnail(path: Path, size: int) -> Image.Image:
    # From the cached thumbnail the other views use, made smaller here: one decode per photo.
    image = thumbnail(path, max(size, THUMBNAIL_SIZE))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty at all, or a closed file
        return False
