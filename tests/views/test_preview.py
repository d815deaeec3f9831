"""Terminal previews: which image protocol a terminal speaks, and hits drawn inline in it."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from sample_photos import save_photo

from clipcli.search import SearchHit
from clipcli.views.preview import image_protocol, write_previews

SIXEL_START = re.compile(r"\x1bP[0-9;]*q")  # DCS ... q: the sixel data follows
KITTY_START = "\x1b_G"  # APC G: a kitty graphics command
KITTY_CELL = chr(0x10EEEE)  # the placeholder a kitty picture is shown through

# Answers to the questions textual-image asks: "what are you?" (DA1; 4 in the answer means
# sixel graphics) and, for kitty's protocol, a query command that a kitty terminal says OK to.
SIXEL_TERMINAL = {"\x1b[c": "\x1b[?62;4;22c"}
KITTY_TERMINAL = {"\x1b[c": "\x1b[?62;22c", "a=q": "\x1b_Gi=1;OK\x1b\\"}
PLAIN_TERMINAL = {"\x1b[c": "\x1b[?62;22c"}

# textual-image waits a tenth of a second for each answer; a busy machine may take longer to
# give one, so a child whose every question is answered waits longer (and a test that leaves
# one unanswered keeps the tenth).
PATIENT = """\
import textual_image._terminal as terminal
ask = terminal.capture_terminal_response
def patient(start_marker, end_marker, timeout=None):
    return ask(start_marker, end_marker, 30)
terminal.capture_terminal_response = patient
"""
REPORT_PROTOCOL = """\
import sys
from clipcli.views.preview import image_protocol
found = image_protocol(sys.stdout)
print("protocol:", found, "imported:", "textual_image" in sys.modules)
"""


def in_fake_terminal(code: str, answers: dict[str, str], *, stdin_too: bool = True) -> str:
    """Run `code` with its stdout (and stdin) on a pseudo-terminal that answers each question
    in `answers` (what it is asked -> what it says), once; returns all the child wrote."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=slave if stdin_too else subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    written, pending = "", dict(answers)
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break  # a child that hangs: the output so far tells why
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            written += chunk.decode(errors="replace")
            for question in [q for q in pending if q in written]:
                os.write(master, pending.pop(question).encode())
    finally:
        os.close(master)
        child.wait(timeout=60)
    return written


@pytest.fixture
def hits(tmp_path: Path) -> list[SearchHit]:
    cat = save_photo("chelsea", tmp_path / "cat.jpg")
    coffee = save_photo("coffee", tmp_path / "coffee.jpg")
    return [SearchHit(1, str(cat), 0.3124), SearchHit(2, str(coffee), 0.2871)]


def terminal_console(**options) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, **options), out


def test_output_that_is_no_terminal_speaks_no_protocol():
    assert image_protocol(io.StringIO()) is None


def test_piped_output_is_answered_at_once_without_loading_textual_image():
    done = subprocess.run(
        [sys.executable, "-c", REPORT_PROTOCOL],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "protocol: None imported: False"


def test_a_terminal_that_speaks_sixel_is_found_by_asking_it():
    written = in_fake_terminal(PATIENT + REPORT_PROTOCOL, SIXEL_TERMINAL)

    assert "protocol: sixel" in written


def test_a_terminal_that_speaks_kittys_protocol_is_found_by_asking_it():
    written = in_fake_terminal(PATIENT + REPORT_PROTOCOL, KITTY_TERMINAL)

    assert "protocol: kitty" in written


def test_a_terminal_of_text_only_speaks_no_protocol_even_with_a_fallback_picture():
    written = in_fake_terminal(REPORT_PROTOCOL, PLAIN_TERMINAL)

    assert "protocol: None imported: True" in written  # asked, and told no


def test_a_terminal_is_not_asked_when_the_answer_could_not_be_read_from_stdin():
    # Input piped in: the answer would go to the terminal, not to stdin.
    written = in_fake_terminal(REPORT_PROTOCOL, SIXEL_TERMINAL, stdin_too=False)

    assert "protocol: None imported: False" in written
    assert "Traceback" not in written


def test_sixel_previews_draw_each_picture_then_its_hit(hits):
    console, out = terminal_console()

    write_previews(hits, console, protocol="sixel")

    written = out.getvalue()
    pictures = [match.start() for match in SIXEL_START.finditer(written)]
    first, second = written.index("#1  0.312  "), written.index("#2  0.287  ")
    assert len(pictures) == 2
    assert pictures[0] < first < pictures[1] < second  # each picture above its own line
    assert f"#1  0.312  {hits[0].path}\n" in written


def test_kitty_previews_send_the_picture_and_draw_the_cells_that_show_it(hits, monkeypatch):
    sent = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", sent)  # textual-image sends kitty's data there
    console, out = terminal_console(color_system="standard")  # as tmux without COLORTERM

    write_previews(hits[:1], console, protocol="kitty")

    image_id = int(re.search(r"\x1b_Gi=(\d+),", sent.getvalue()).group(1))
    red, green, blue = (image_id >> 16) & 255, (image_id >> 8) & 255, image_id & 255
    written = out.getvalue()
    assert KITTY_START in sent.getvalue() and KITTY_START not in written
    assert KITTY_CELL in written
    # the cells name their picture by a 24-bit colour, which no palette may round off
    assert f"\x1b[38;2;{red};{green};{blue}m{KITTY_CELL}" in written
    assert f"#1  0.312  {hits[0].path}" in written


def test_a_file_that_cannot_be_read_shows_its_reason_instead_of_a_picture(hits, tmp_path):
    gone = SearchHit(2, str(tmp_path / "deleted.jpg"), 0.25)
    console, out = terminal_console()

    write_previews([hits[0], gone], console, protocol="sixel")

    written = out.getvalue()
    assert len(SIXEL_START.findall(written)) == 1
    assert "(no such file)" in written
    assert f"#2  0.250  {gone.path}" in written


def test_paths_are_printed_literally_on_one_line(tmp_path):
    odd = str(tmp_path / "[bold]not bold[/bold]\x1b[31m\nsecond line \udce9.jpg")
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict: a surrogate would fail
    console = Console(file=stream, force_terminal=True, width=200)

    write_previews([SearchHit(1, odd, 0.5)], console, protocol="sixel")

    stream.flush()
    written = stream.buffer.getvalue().decode("utf-8")
    assert "[bold]not bold[/bold]\\x1b[31m\\nsecond line \\xe9.jpg" in written
    assert "\x1b[31m" not in written


def test_previews_need_a_terminal_that_shows_images(hits):
    console = Console(file=io.StringIO())

    with pytest.raises(ValueError, match="image_protocol"):
        write_previews(hits, console)
