"""The query string of a search request, read and checked as `clipcli search` checks its
options: a value that cannot be read is a UsageError (400), a photo id that cannot be one an
UnknownPhoto (404)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from starlette.datastructures import QueryParams

from clipcli.errors import UsageError
from clipcli.query import parse_filters
from clipcli.web.warm_search import Ask, UnknownPhoto

DEFAULT_TOP_K = 24
# A page of results, not a dump of the library: every hit is a thumbnail the page then asks for.
MAX_TOP_K = 200
# Catalog ids are SQLite rowids: positive, at most 19 digits.
_PHOTO_ID = re.compile(r"[1-9][0-9]{0,18}")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def ask_from(params: QueryParams) -> Ask:
    """top_k (default DEFAULT_TOP_K, at most MAX_TOP_K), min_score, and the filters under
    (repeatable), since, until and ext, as `clipcli search` takes them."""
    filters = parse_filters(
        [Path(folder) for folder in params.getlist("under") if folder],
        params.get("since") or None,
        params.get("until") or None,
        params.get("ext") or None,
    )
    return Ask(_top_k(params.get("top_k")), _min_score(params.get("min_score")), filters)


def flag(params: QueryParams, name: str) -> bool:
    value = params.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={value}: not a yes or no", hint=f"use {name}=1 or {name}=0")


def photo_id(text: str) -> int:
    """A catalog id from a path segment; anything but a positive integer names no photo."""
    if not _PHOTO_ID.fullmatch(text) or int(text) >= 2**63:
        raise UnknownPhoto(f"no photo {text!r} in the index")
    return int(text)


def _top_k(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_TOP_K
    try:
        top_k = int(text)
    except ValueError:
        raise UsageError(f"top_k={text}: not a whole number") from None
    if top_k < 1:
        raise UsageError(f"top_k must be at least 1, not {top_k}")
    return min(top_k, MAX_TOP_K)


def _min_score(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        score = float(text)
    except ValueError:
        raise UsageError(f"min_score={text}: not a number") from None
    if not math.isfinite(score):
        raise UsageError(f"min_score={text}: not a finite number")
    return score
