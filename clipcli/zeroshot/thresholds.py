"""Per-label thresholds calibrated on labelled photos, and the file that carries them.

A label's threshold is the lowest cosine at which the images given that label (those whose
cosine to it reaches the threshold) are right often enough: the precision asked for. A cosine
means something only for the model and prompt templates that made it, and a threshold only
among the labels it was weighed against, so the file records all three, and is refused with
any other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcli.atomic_files import write_file
from clipcli.errors import UsageError
from clipcli.zeroshot.floors import Floors, MinScore
from clipcli.zeroshot.templates import TemplateSet, load_templates

if TYPE_CHECKING:
    import numpy as np

    from clipcli.models.names import ModelSpec

FORMAT = "clipcli-thresholds"
VERSION = 1
DEFAULT_PRECISION_TARGET = 0.9


@dataclass(frozen=True)
class LabelThreshold:
    """One label's threshold (None: no cosine reaches the target precision), with the
    precision and recall it had on the labelled photos, and how many photos had the label."""

    label: str
    threshold: float | None
    precision: float | None  # None: nothing given the label (no threshold)
    recall: float
    support: int


@dataclass(frozen=True)
class RecordedModel:
    """The model the cosines came from, as the file records it."""

    name: str
    pretrained: str | None
    weights: str | None
    fingerprint: str
    described: str


@dataclass(frozen=True)
class Thresholds:
    """A calibration: per-label thresholds, and what they hold for. A Floors."""

    model: RecordedModel
    templates: str  # as --templates named it: a set's name or a file's path
    templates_digest: str
    precision_target: float
    dataset: str
    per_label: tuple[LabelThreshold, ...]

    @property
    def labels(self) -> list[str]:
        return [entry.label for entry in self.per_label]

    def floor(self, label: str) -> float | None:
        for entry in self.per_label:
            if entry.label == label:
                return entry.threshold
        return None

    def unreachable(self) -> list[str]:
        """The labels no cosine gave the target precision: never given with these thresholds."""
        return [entry.label for entry in self.per_label if entry.threshold is None]


def checked_target(target: float) -> float:
    if not 0.0 < target <= 1.0:
        raise UsageError(f"--precision-target must be above 0 and at most 1, not {target}")
    return target


def calibrate(
    similarities: np.ndarray, truth: np.ndarray, labels: Sequence[str], target: float
) -> list[LabelThreshold]:
    """Each label's lowest cosine whose predictions reach `target` precision.

    `similarities` is [images, labels] of cosines, `truth` each image's label index. A label
    is given to every image whose cosine to it reaches the threshold, as `--multi` gives it;
    images tied at one cosine are all given the label or none. Each threshold is the cosine
    of a photo that has the label: below it, more photos would get the label, not more
    right ones.
    """
    return [
        _label_threshold(label, similarities[:, column], truth == column, target)
        for column, label in enumerate(labels)
    ]


def _label_threshold(
    label: str, cosines: np.ndarray, positive: np.ndarray, target: float
) -> LabelThreshold:
    import numpy as np

    support = int(positive.sum())
    order = np.argsort(-cosines, kind="stable")
    ranked, right = cosines[order], positive[order]
    hits = np.cumsum(right)
    given = np.arange(1, len(ranked) + 1)
    # A cut falls after the last of a run of equal cosines, and only after a run that holds
    # a right answer: lowering the threshold past wrong ones alone adds no recall.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    before = np.concatenate(([0], hits[ends[:-1]]))
    ends = ends[hits[ends] > before]
    precise = ends[hits[ends] / given[ends] >= target - 1e-12]
    if support == 0 or len(precise) == 0:
        return LabelThreshold(label, None, None, 0.0, support)
    cut = int(precise[-1])  # the lowest threshold: the most photos given the label
    return LabelThreshold(
        label,
        float(ranked[cut]),
        float(hits[cut] / given[cut]),
        float(hits[cut] / support),
        support,
    )


def model_record(spec: ModelSpec) -> RecordedModel:
    return RecordedModel(
        spec.name, spec.pretrained, spec.weights_id, spec.fingerprint, spec.describe()
    )


def write_thresholds(path: Path, thresholds: Thresholds) -> None:
    data = {"format": FORMAT, "version": VERSION, **asdict(thresholds)}
    data["labels"] = data.pop("per_label")
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    write_file(path, text.encode("utf-8"), what="the thresholds")


def read_thresholds(path: Path) -> Thresholds:
    """A thresholds file that `clipcli eval --thresholds` wrote; UsageError (exit 2) for a
    file that cannot be read or is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such thresholds file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read thresholds ({_reason(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(
            f"{path}: not a thresholds file", hint="make one with `clipcli eval --thresholds`"
        )
    if data.get("version") != VERSION:
        raise UsageError(f"{path}: thresholds of format version {data.get('version')} unknown")
    try:
        return _parsed(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: damaged thresholds file ({_reason(exc)})") from None


def _parsed(data: dict[str, Any]) -> Thresholds:
    per_label = tuple(
        LabelThreshold(
            str(entry["label"]),
            _number_or_none(entry["threshold"]),
            _number_or_none(entry["precision"]),
            float(entry["recall"]),
            int(entry["support"]),
        )
        for entry in data["labels"]
    )
    if not per_label:
        raise ValueError("no labels")
    model = data["model"]
    return Thresholds(
        model=RecordedModel(
            str(model["name"]),
            model["pretrained"],
            model["weights"],
            str(model["fingerprint"]),
            str(model["described"]),
        ),
        templates=str(data["templates"]),
        templates_digest=str(data["templates_digest"]),
        precision_target=float(data["precision_target"]),
        dataset=str(data["dataset"]),
        per_label=per_label,
    )


def _number_or_none(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a number")
    return number


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"{exc.args[0]} missing"
    return getattr(exc, "strerror", None) or str(exc)


@dataclass(frozen=True)
class LabelChoice:
    """What classify and sort label images with: the labels, their templates, the model,
    and the floors a label must clear (None: the best label is always given)."""

    labels: list[str]
    templates: TemplateSet
    model: str | None
    pretrained: str | None
    floors: Floors | None


def choose_labels(
    labels: list[str] | None,
    templates: str | None,
    model: str | None,
    pretrained: str | None,
    *,
    thresholds: Path | None,
    min_score: float | None,
) -> LabelChoice:
    """The labels, templates, model and floors asked for, with a thresholds file filling in
    what is not given and refusing (exit 2) what it was not calibrated for."""
    if thresholds is not None and min_score is not None:
        raise UsageError("--thresholds and --min-score both set a floor", hint="give one of them")
    if thresholds is None:
        if not labels:
            raise UsageError("no labels given", hint='use --labels "cat,dog" or --labels-file FILE')
        floors = None if min_score is None else MinScore(min_score)
        return LabelChoice(
            labels, load_templates(templates or "default"), model, pretrained, floors
        )
    calibrated = read_thresholds(thresholds)
    chosen = labels or calibrated.labels
    _check_labels(thresholds, calibrated, chosen)
    template_set = _fitting_templates(thresholds, calibrated, templates)
    model, pretrained = _fitting_model(thresholds, calibrated, model, pretrained)
    return LabelChoice(chosen, template_set, model, pretrained, calibrated)


def _check_labels(path: Path, calibrated: Thresholds, labels: Sequence[str]) -> None:
    if set(labels) == set(calibrated.labels):
        return
    extra = [label for label in labels if label not in calibrated.labels]
    left_out = [label for label in calibrated.labels if label not in labels]
    why = []
    if extra:
        why.append(f"not calibrated: {', '.join(extra)}")
    if left_out:
        why.append(f"left out: {', '.join(left_out)}")
    raise UsageError(
        f"{path}: calibrated for other labels ({'; '.join(why)})",
        hint="give the labels it was calibrated for, or leave out --labels to use them",
    )


def _fitting_templates(path: Path, calibrated: Thresholds, asked: str | None) -> TemplateSet:
    """The templates asked for, which must be those of the calibration; by default those."""
    if asked is not None:
        chosen = load_templates(asked)
        if chosen.digest != calibrated.templates_digest:
            raise UsageError(
                f"{path}: calibrated with templates {calibrated.templates}, not {asked}",
                hint="leave out --templates to use those it was calibrated with",
            )
        return chosen
    try:
        chosen = load_templates(calibrated.templates)
    except UsageError:
        chosen = None
    if chosen is None or chosen.digest != calibrated.templates_digest:
        raise UsageError(
            f"{path}: calibrated with templates {calibrated.templates}, which are not there "
            "as they were",
            hint="calibrate again with `clipcli eval --thresholds`",
        )
    return chosen


def _fitting_model(
    path: Path, calibrated: Thresholds, model: str | None, pretrained: str | None
) -> tuple[str | None, str | None]:
    """The model asked for, which must be the calibration's; with none asked for, that one."""
    from clipcli.encoders.choose import recorded_model, requested_spec
    from clipcli.settings import model_from_environment

    recorded = calibrated.model
    if model is None and pretrained is None and not model_from_environment():
        spec = recorded_model(recorded.name, recorded.pretrained, recorded.weights)
        return spec.name, spec.pretrained
    spec = requested_spec(model, pretrained)
    if spec.fingerprint != recorded.fingerprint:
        raise UsageError(
            f"{path}: calibrated with {recorded.described}, not {spec.describe()}",
            hint="use the model it was calibrated with, or calibrate this one with "
            "`clipcli eval --thresholds`",
        )
    return model, pretrained
