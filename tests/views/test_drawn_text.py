"""Text for pictures: one line, of characters a font can draw."""

from __future__ import annotations

from clipcli.views.drawn_text import drawable


def test_printable_text_is_drawn_as_it_is():
    assert drawable("Crème brûlée #1  0.312.jpg") == "Crème brûlée #1  0.312.jpg"


def test_undecodable_bytes_and_control_characters_become_question_marks():
    assert drawable("latin1-\udce9.jpg") == "latin1-?.jpg"
    assert drawable("two\nlines\tand \x1b[31mred") == "two?lines?and ?[31mred"
