"""Prompt template sets: those shipped in templates/ beside this module, and the user's own
files (one template per line, '{}' standing for the label)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from clipcli.errors import UsageError

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_SUFFIX = ".txt"
# UTF-8, less the byte-order mark that Windows editors put first, which would start a label.
TEXT_FILE_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class TemplateSet:
    """Named prompt templates; '{}' stands for the label."""

    name: str
    templates: tuple[str, ...]

    @property
    def digest(self) -> str:
        """Identity of the set's content, so an edited template file gets fresh embeddings."""
        return hashlib.sha256("\n".join(self.templates).encode()).hexdigest()[:16]

    def fill(self, label: str) -> list[str]:
        return [template.replace("{}", label) for template in self.templates]


def template_names() -> list[str]:
    """Names accepted by --templates besides file paths."""
    return sorted(path.stem for path in TEMPLATE_DIR.glob(f"*{TEMPLATE_SUFFIX}"))


def load_templates(name_or_path: str) -> TemplateSet:
    """A template set by name (one shipped in templates/) or from a file path."""
    path = Path(name_or_path)
    if not _is_file(path, name_or_path):
        path = TEMPLATE_DIR / f"{name_or_path}{TEMPLATE_SUFFIX}"
        if not _is_file(path, name_or_path):
            raise UsageError(
                f"unknown template set '{name_or_path}'",
                hint=f"use one of {', '.join(template_names())} or a file path",
            )
    return TemplateSet(path.stem, parse_template_file(path))


def _is_file(path: Path, name_or_path: str) -> bool:
    # is_file() answers False only for names that do not exist; a name too long for the file
    # system, or a folder on the way that cannot be searched, raises instead.
    try:
        return path.is_file()
    except OSError as exc:
        raise UsageError(
            f"{name_or_path}: cannot read template file ({exc.strerror or exc})"
        ) from None


def parse_template_file(path: Path) -> tuple[str, ...]:
    """One template per line; blank lines and '#' comments are ignored."""
    try:
        lines = path.read_text(encoding=TEXT_FILE_ENCODING).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read template file ({exc})") from exc
    templates = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise UsageError(f"{path}:{number}: a template needs exactly one '{{}}' placeholder")
        templates.append(line)
    if not templates:
        raise UsageError(f"{path}: no templates in file")
    return tuple(templates)
