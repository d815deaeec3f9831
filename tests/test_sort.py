"""`clipcli sort`: each image copied (or moved) into the folder of its label, the sources left
as they were, nothing ever overwritten, a kill at any moment losing no file, and a re-run doing
only what is missing."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, snapshot

from clipcli.locks import exclusive
from clipcli.shapes import COLOURS, SHAPES, draw_shape, write_labelled_folder
from clipcli.sort import LOCK_NAME, MANIFEST_NAME, UNSORTED

LABELS = ",".join(SHAPES)
SHAPES_MODEL = ["--model", TEST_MODEL]
MANIFEST_HEADER = ["source", "destination", "label", "score"]


@pytest.fixture(scope="module")
def drawn_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six images of each shape (any colour), freshly drawn, in a folder per shape."""
    root = tmp_path_factory.mktemp("drawn") / "photos"
    write_labelled_folder(root, 6, seed=5)
    return root


@pytest.fixture
def photos(drawn_shapes: Path, tmp_path: Path) -> Path:
    """A copy of the drawn shapes that a test may change, with the files' times kept."""
    return Path(shutil.copytree(drawn_shapes, tmp_path / "photos"))


def sort(cli, *args: str | Path):
    """`clipcli sort ARGS --labels <the shapes> --model clipcli-shapes --json`."""
    return cli.json("sort", *args, "--labels", LABELS, *SHAPES_MODEL)


def times(folder: Path) -> dict[str, int]:
    return {str(path): os.stat(path).st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def manifest_rows(dest: Path) -> list[list[str]]:
    with open(dest / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def part_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*.part")]


# --- copying into label folders ---------------------------------------------------------------


def test_each_shape_lands_in_its_own_folder_and_the_sources_are_left_as_they_were(
    cli, photos, tmp_path
):
    before, mtimes = snapshot(photos), times(photos)
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest)

    assert result.exit_code == 0, result.stderr
    assert snapshot(photos) == before and times(photos) == mtimes
    sources = sorted(photos.rglob("*.*"))
    right = [path for path in sources if (dest / path.parent.name / path.name).is_file()]
    assert len(right) >= 0.95 * len(sources)
    assert (report["images"], report["placed"], report["failed"]) == (len(sources), 36, 0)
    assert report["folders"] == {shape: shape for shape in SHAPES}
    assert {entry["action"] for entry in report["files"]} == {"copied"}
    for entry in report["files"]:  # every copy holds its source's bytes, and its time
        assert Path(entry["destination"]).read_bytes() == Path(entry["source"]).read_bytes()
        assert os.stat(entry["destination"]).st_mtime_ns == os.stat(entry["source"]).st_mtime_ns


def test_a_rerun_copies_nothing_and_reports_every_file_as_already_there(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    first, _ = sort(cli, photos, "--into", dest)
    assert first.exit_code == 0, first.stderr
    sorted_before = snapshot(dest)

    again, report = sort(cli, photos, "--into", dest)

    assert again.exit_code == 0, again.stderr
    assert snapshot(dest) == sorted_before  # the manifest too: no row added
    assert (report["placed"], report["already_there"], report["unsorted"]) == (0, 36, 0)
    assert {entry["action"] for entry in report["files"]} == {"already there"}


def test_the_summary_for_people_gives_the_counts_and_the_manifest(cli, photos, tmp_path):
    dest = tmp_path / "sorted"

    result = cli("sort", photos, "--into", dest, "--labels", LABELS, *SHAPES_MODEL)

    assert result.exit_code == 0, result.stderr
    assert f"sorted 36 images into {dest} (copying):" in result.stdout
    assert "placed 36, already there 0, unsorted 0, failed 0" in result.stdout
    assert f"manifest: {dest / MANIFEST_NAME}" in result.stdout
    assert result.stderr == ""


def test_a_dry_run_prints_the_plan_and_changes_nothing(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    before = snapshot(photos)

    result, plan = sort(cli, photos, "--into", dest, "--dry-run", "--move")

    assert result.exit_code == 0, result.stderr
    assert snapshot(photos) == before and not dest.exists()
    assert plan["dry_run"] is True
    assert {entry["action"] for entry in plan["files"]} == {"would move"}
    _, report = sort(cli, photos, "--into", dest)  # the plan is what a real run does
    assert [e["destination"] for e in plan["files"]] == [e["destination"] for e in report["files"]]


def test_a_dry_run_over_an_earlier_run_plans_only_what_is_missing(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    sort(cli, photos, "--into", dest)
    (dest / "circle" / sorted(os.listdir(dest / "circle"))[0]).unlink()
    before = snapshot(dest)

    result = cli("sort", photos, "--into", dest, "--dry-run", "--labels", LABELS, *SHAPES_MODEL)

    assert result.exit_code == 0, result.stderr
    assert snapshot(dest) == before
    assert result.stdout.count("would copy: ") == 1
    assert "placed 1, already there 35, unsorted 0, failed 0" in result.stdout
    assert "dry run: nothing was changed" in result.stdout


# --- never overwriting ----------------------------------------------------------------------


def test_an_identical_file_is_skipped_and_a_different_one_makes_the_copy_take_a_number(
    cli, photos, tmp_path
):
    dest = tmp_path / "sorted"
    _, plan = sort(cli, photos, "--into", dest, "--dry-run")
    first, second = (Path(entry["destination"]) for entry in plan["files"][:2])
    first.parent.mkdir(parents=True)
    first.write_bytes(b"someone else's picture")  # a different file under the first's name
    shutil.copyfile(plan["files"][1]["source"], second)  # the second's very bytes

    result, report = sort(cli, photos, "--into", dest)

    assert result.exit_code == 0, result.stderr
    assert first.read_bytes() == b"someone else's picture"
    numbered = first.with_name(f"{first.stem} (1){first.suffix}")
    assert report["files"][0]["destination"] == str(numbered)
    assert numbered.read_bytes() == Path(plan["files"][0]["source"]).read_bytes()
    assert report["files"][1]["action"] == "already there"
    assert (report["placed"], report["already_there"]) == (35, 1)


# --- floors, several labels, _unsorted -------------------------------------------------------


def test_an_image_whose_best_label_is_below_the_floor_goes_to_unsorted(cli, photos, tmp_path):
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest, "--min-score", "0.99")

    assert result.exit_code == 0, result.stderr
    assert (report["placed"], report["unsorted"]) == (0, 36)
    assert sorted(os.listdir(dest)) == [LOCK_NAME, UNSORTED, MANIFEST_NAME]
    for entry in report["files"]:
        assert entry["label"] is None and 0 < entry["score"] < 0.99
        assert Path(entry["destination"]).parent == dest / UNSORTED


def test_multi_files_an_image_under_every_label_that_clears_the_floor(cli, photos, tmp_path):
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest, "--multi", "--min-score", "-1")

    assert result.exit_code == 0, result.stderr
    assert report["placed"] == 36 * len(SHAPES)  # every cosine is at least -1
    for path in photos.rglob("*.*"):
        assert all((dest / shape / path.name).read_bytes() == path.read_bytes() for shape in SHAPES)


def test_multi_files_an_image_under_its_shape_and_its_colour_and_none_under_unsorted(
    cli, photos, tmp_path
):
    dest = tmp_path / "sorted"
    labels = ",".join(SHAPES + COLOURS)

    result, report = cli.json(
        "sort", photos, "--into", dest, "--labels", labels, "--multi", "--min-score", "0.45",
        *SHAPES_MODEL,
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    per_image: dict[str, list[dict]] = {}
    for entry in report["files"]:
        per_image.setdefault(entry["source"], []).append(entry)
    both = 0
    for source, entries in per_image.items():
        colour, shape = Path(source).stem.split("-")[1:]  # e.g. 0003-green-circle.webp
        both += {entry["label"] for entry in entries} == {colour, shape}
        assert all(entry["score"] >= 0.45 for entry in entries)
        assert entries == sorted(entries, key=lambda entry: -entry["score"])  # best first
        for entry in entries:
            assert Path(entry["destination"]).parent == dest / entry["label"]
    assert both >= 0.9 * len(per_image)
    assert report["unsorted"] == 0 and not (dest / UNSORTED).exists()


def test_multi_files_an_image_that_clears_no_floor_under_unsorted(cli, photos, tmp_path):
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest, "--multi", "--min-score", "0.99")

    assert result.exit_code == 0, result.stderr
    assert (report["placed"], report["unsorted"]) == (0, 36)
    assert {entry["label"] for entry in report["files"]} == {None}
    assert len(os.listdir(dest / UNSORTED)) == 36


def test_multi_with_move_copies_into_all_but_the_last_folder_then_moves(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    originals = {path.name: path.read_bytes() for path in photos.rglob("*.*")}

    result, report = sort(cli, photos, "--into", dest, "--multi", "--min-score", "-1", "--move")

    assert result.exit_code == 0, result.stderr
    assert list(photos.rglob("*.*")) == []
    for name, data in originals.items():
        assert all((dest / shape / name).read_bytes() == data for shape in SHAPES)
    actions = [entry["action"] for entry in report["files"]]
    assert actions == (["copied"] * (len(SHAPES) - 1) + ["moved"]) * len(originals)


def test_multi_without_a_floor_is_a_usage_error(cli, photos, tmp_path):
    result, _ = sort(cli, photos, "--into", tmp_path / "sorted", "--multi")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: --multi files an image under every label that clears a floor; "
        "give --min-score S or --thresholds FILE\n"
    )
    assert not (tmp_path / "sorted").exists()


def test_no_labels_is_a_usage_error(cli, photos, tmp_path):
    result = cli("sort", photos, "--into", tmp_path / "sorted", *SHAPES_MODEL)

    assert result.exit_code == 2
    assert result.stderr == 'error: no labels given; use --labels "cat,dog" or --labels-file FILE\n'
    assert not (tmp_path / "sorted").exists()


def test_dest_that_is_a_file_is_a_usage_error(cli, photos):
    into = next((photos / "circle").iterdir())
    before = snapshot(photos)

    result, _ = sort(cli, photos, "--into", into)

    assert result.exit_code == 2
    assert result.stderr == f"error: --into {into}: not a folder\n"
    assert snapshot(photos) == before


def test_two_floors_at_once_are_a_usage_error(cli, photos, tmp_path):
    result, _ = sort(
        cli, photos, "--into", tmp_path / "s", "--min-score", "0.3", "--thresholds", "t"
    )

    assert result.exit_code == 2
    assert "--thresholds and --min-score both set a floor" in result.stderr


def test_a_thresholds_file_gives_the_labels_and_the_floors(cli, photos, tmp_path):
    calibration = tmp_path / "calibration"
    write_labelled_folder(calibration, 6, seed=21)
    thresholds = tmp_path / "thresholds.json"
    made = cli("eval", calibration, *SHAPES_MODEL, "--thresholds", thresholds, "--json")
    assert made.exit_code == 0, made.stderr
    dest = tmp_path / "sorted"

    result, report = cli.json("sort", photos, "--into", dest, "--thresholds", thresholds)

    assert result.exit_code == 0, result.stderr
    assert sorted(report["folders"]) == sorted(SHAPES)  # the labels it was calibrated for
    assert report["placed"] + report["unsorted"] == 36
    assert report["placed"] >= 30
    other, _ = cli.json(
        "sort", photos, "--into", dest, "--thresholds", thresholds, "--labels", "a,b"
    )
    assert other.exit_code == 2
    assert "calibrated for other labels" in other.stderr


# --- folder names -----------------------------------------------------------------------------


def test_unsafe_labels_give_safe_distinct_folders_inside_dest(cli, photos, tmp_path):
    labels_file = tmp_path / "labels.txt"
    long = " ".join(["a very long label"] * 20)
    labels = ["a/b", "..", "bell\x07 tab\tend", long, "CON", "_unsorted", "A/B"]
    labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
    dest = tmp_path / "sorted"

    result, report = cli.json(
        "sort", photos, "--into", dest, "--labels-file", labels_file, *SHAPES_MODEL
    )

    assert result.exit_code == 0, result.stderr
    assert report["folders"] == {
        "a/b": "a_b",
        "..": "_label",
        "bell\x07 tab\tend": "bell tab end",
        long: long[:100].rstrip(),
        "CON": "CON_",
        "_unsorted": "_unsorted (2)",
        "A/B": "A_B (2)",
    }
    assert set(os.listdir(tmp_path)) - {"clipcli-home"} == {"photos", "sorted", "labels.txt"}
    made = {name for name in os.listdir(dest) if (dest / name).is_dir()}
    assert made <= set(report["folders"].values())
    for entry in report["files"]:
        assert Path(entry["destination"]).parent.parent == dest


# --- the manifest ---------------------------------------------------------------------------


def test_the_manifest_has_a_row_per_file_with_absolute_paths_label_and_cosine(
    cli, photos, tmp_path, monkeypatch
):
    dest = tmp_path / "sorted"
    monkeypatch.chdir(tmp_path)  # sources given relative: the manifest holds absolute paths
    _, scored = sort(cli, "photos", "--into", "sorted", "--dry-run")
    floor = sorted(entry["score"] for entry in scored["files"])[18]  # half go to _unsorted

    result, report = sort(cli, "photos", "--into", "sorted", "--min-score", str(floor))

    assert result.exit_code == 0, result.stderr
    rows = manifest_rows(dest)
    assert rows[0] == MANIFEST_HEADER
    assert rows[1:] == [
        [entry["source"], entry["destination"], entry["label"] or "", f"{entry['score']:.4f}"]
        for entry in report["files"]
    ]
    for source, destination, _, _ in rows[1:]:
        assert Path(source).is_absolute() and Path(source).is_relative_to(tmp_path / "photos")
        assert Path(destination).is_file() and Path(destination).is_relative_to(dest)
    unsorted = [row for row in rows[1:] if row[2] == ""]
    assert 0 < len(unsorted) == report["unsorted"] < 36
    best = {entry["source"]: entry["score"] for entry in scored["files"]}
    assert all(float(score) == best[source] for source, _, _, score in unsorted)


def test_a_rerun_appends_only_the_rows_of_files_it_placed(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    sort(cli, photos, "--into", dest)
    before = (dest / MANIFEST_NAME).read_bytes()
    gone = dest / "star" / sorted(os.listdir(dest / "star"))[0]
    gone.unlink()

    result, report = sort(cli, photos, "--into", dest)

    assert result.exit_code == 0, result.stderr
    after = (dest / MANIFEST_NAME).read_bytes()
    assert after.startswith(before)
    added = after[len(before) :].decode().splitlines()
    assert len(added) == 1 and added[0].split(",")[1] == str(gone)
    assert report["placed"] == 1


def test_a_rerun_writes_the_row_a_kill_lost_between_a_file_landing_and_its_row(
    cli, photos, tmp_path
):
    dest = tmp_path / "sorted"
    sort(cli, photos, "--into", dest)
    complete = (dest / MANIFEST_NAME).read_text(encoding="utf-8")
    lines = complete.splitlines(keepends=True)
    (dest / MANIFEST_NAME).write_text("".join(lines[:-1]), encoding="utf-8")  # the last row lost

    result, report = sort(cli, photos, "--into", dest)

    assert result.exit_code == 0, result.stderr
    assert report["placed"] == 0
    assert (dest / MANIFEST_NAME).read_text(encoding="utf-8") == complete


# --- sources ----------------------------------------------------------------------------------


def test_dest_inside_a_source_folder_is_not_sorted_again(cli, photos):
    dest = photos / "sorted"

    first, report = sort(cli, photos, "--into", dest)
    again, rerun = sort(cli, photos, "--into", dest)

    assert first.exit_code == again.exit_code == 0, again.stderr
    assert report["images"] == rerun["images"] == 36
    assert (rerun["placed"], rerun["already_there"]) == (0, 36)
    assert not (dest / "circle" / "sorted").exists()


def test_an_unreadable_image_is_left_where_it_is_and_reported(cli, photos, tmp_path):
    broken = photos / "circle" / "broken.jpg"
    broken.write_bytes(b"not a picture")
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest, "--move")

    assert result.exit_code == 1
    assert broken.read_bytes() == b"not a picture"
    assert not any(path.name == "broken.jpg" for path in dest.rglob("*"))
    assert report["failed"] == 1 and report["placed"] == 36
    assert report["errors"][0]["path"] == str(broken)
    error = report["errors"][0]["error"]
    assert result.stderr == f"error: {broken}: {error}\n"


def test_a_folder_already_being_sorted_into_is_refused(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    with exclusive(dest / LOCK_NAME, wait=False):
        result, _ = sort(cli, photos, "--into", dest)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {dest}: another clipcli sort is filing into it; wait for it to finish\n"
    )
    assert os.listdir(dest) == [LOCK_NAME]


# --- moving -----------------------------------------------------------------------------------


def test_move_leaves_each_image_whole_in_its_folder_and_none_behind(cli, photos, tmp_path):
    originals = {path.name: path.read_bytes() for path in photos.rglob("*.*")}
    dest = tmp_path / "sorted"

    result, report = sort(cli, photos, "--into", dest, "--move")

    assert result.exit_code == 0, result.stderr
    assert list(photos.rglob("*.*")) == []
    assert {entry["action"] for entry in report["files"]} == {"moved"}
    landed = {path.name: path.read_bytes() for path in dest.glob("*/*.*")}
    assert landed == originals


def test_move_of_an_image_already_copied_completes_by_removing_the_source(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    sort(cli, photos, "--into", dest)
    sorted_before = snapshot(dest)

    result, report = sort(cli, photos, "--into", dest, "--move")

    assert result.exit_code == 0, result.stderr
    assert list(photos.rglob("*.*")) == []
    assert snapshot(dest) == sorted_before
    assert {entry["action"] for entry in report["files"]} == {"source removed"}
    assert report["already_there"] == 36


def test_stale_temporary_files_of_a_killed_run_are_removed(cli, photos, tmp_path):
    dest = tmp_path / "sorted"
    stale = dest / "circle" / ".clipcli-sort-0123456789abcdef.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a picture")

    result, _ = sort(cli, photos, "--into", dest)

    assert result.exit_code == 0, result.stderr
    assert part_files(dest) == []


# --- kill -9 ----------------------------------------------------------------------------------


def write_small_shapes(folder: Path, count: int) -> dict[str, str]:
    """`count` small drawn shapes, clear enough that every run labels each alike; returns
    {name: SHA-256}, each file's bytes its own."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    digests = {}
    for index in range(count):
        image, spec = draw_shape(rng, SHAPES[index % len(SHAPES)], size=(48, 48))
        path = folder / f"{index:04d}-{spec.colour}-{spec.shape}.png"
        image.save(path)
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def files_by_digest(*folders: Path) -> list[str]:
    """The SHA-256 of every file under the folders that is not hidden, nor the manifest."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST_NAME:
                found.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return sorted(found)


def manifest_length(dest: Path) -> int:
    try:
        with open(dest / MANIFEST_NAME, "rb") as handle:
            return max(0, handle.read().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def sort_killed(source: Path, dest: Path, *, after_rows: int | None, after_seconds: float) -> int:
    """Run `python -m clipcli sort SOURCE --into DEST --move` and SIGKILL it once the manifest
    has `after_rows` rows (or after `after_seconds`); returns its exit status."""
    command = [sys.executable, "-m", "clipcli", "sort", str(source), "--into", str(dest)]
    command += ["--labels", LABELS, *SHAPES_MODEL, "--move", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while process.poll() is None:
        due = time.monotonic() - started >= after_seconds
        if due or (after_rows is not None and manifest_length(dest) >= after_rows):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    return process.wait()


@pytest.fixture(params=["one filesystem", "across filesystems"])
def kill_dest(request, tmp_path: Path):
    """Where the killed runs sort into: beside the sources, or on another filesystem (a move
    there is a copy, then the source removed)."""
    if request.param == "one filesystem":
        yield tmp_path / "sorted"
        return
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    with tempfile.TemporaryDirectory(dir=other) as folder:
        yield Path(folder) / "sorted"


@pytest.mark.slow
def test_kill_9_during_sort_move_loses_no_file_and_a_rerun_completes_the_job(kill_dest, tmp_path):
    source, dest = tmp_path / "photos", kill_dest
    originals = write_small_shapes(source, 300)
    expected = sorted(originals.values())
    one_filesystem = os.stat(source).st_dev == os.stat(dest.parent).st_dev
    rng = np.random.default_rng(7)
    # at a random moment (loading, classifying or filing), then at rows of the manifest
    moments = [(None, float(rng.uniform(0.2, 0.7))), (1, 30.0), (int(rng.integers(50, 150)), 30.0)]
    moments.append((220, 30.0))
    killed = 0
    for rows, seconds in moments:
        status = sort_killed(source, dest, after_rows=rows, after_seconds=seconds)
        killed += status == -signal.SIGKILL
        found = files_by_digest(source, dest)
        if one_filesystem:  # a rename: each file whole in exactly one place
            assert found == expected
        else:  # a copy, then the source removed: whole in one place or both, never neither
            assert sorted(set(found)) == expected
        for path in dest.rglob("*"):  # under a real name, only whole files
            if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST_NAME:
                assert hashlib.sha256(path.read_bytes()).hexdigest() in originals.values()
    assert killed >= 3  # the kills came while it was working, not after it had finished

    final = subprocess.run(
        [sys.executable, "-m", "clipcli", "sort", str(source), "--into", str(dest)]
        + ["--labels", LABELS, *SHAPES_MODEL, "--move"],
        capture_output=True,
        text=True,
    )

    assert final.returncode == 0, final.stderr
    assert files_by_digest(source) == []
    assert files_by_digest(dest) == expected
    assert part_files(dest) == []
    rows = manifest_rows(dest)[1:]
    assert len({destination for _, destination, *_ in rows}) >= len(originals) - killed
    assert all(Path(destination).is_file() for _, destination, *_ in rows)
