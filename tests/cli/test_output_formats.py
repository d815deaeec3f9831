"""`--format` of classify and search, `--paths-only`/`-0`, and names that would break output.

The formats are specified in README.md (Output formats). File names and labels here carry
Rich markup, emoji codes, tabs, newlines, 250 characters and bytes that are not UTF-8: each
must come out literally, and in the line formats escaped, so that one result stays one line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_MODEL, make_image
from typer.testing import CliRunner

from clipcli.cli.app import app

REPOSITORY = Path(__file__).resolve().parents[2]

# Each hostile file name, and how plain, tsv and --paths-only write it.
LONG = "l" * 246 + ".png"  # 250 characters, near the 255 bytes a name may have
HOSTILE = {
    "[red]x.png": "[red]x.png",
    ":cat: [bold]b.png": ":cat: [bold]b.png",
    "tab\there.png": "tab\\there.png",
    "new\nline.png": "new\\nline.png",
    "back\\slash.png": "back\\\\slash.png",
    "esc\x1b[31m.png": "esc\\x1b[31m.png",
    LONG: LONG,
}
FOLDER = "[red]photos"  # markup in a folder name as well


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path, shared_cache: Path):
    """A folder of hostile names, indexed once: (folder, index)."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / FOLDER
    colours = ["red", "green", "blue", "white", "black", "yellow", "purple"]
    for name, colour in zip(HOSTILE, colours, strict=True):
        make_image(folder / name, colour)
    index = root / "index"
    env = {"CLIPCLI_HOME": str(root / "home"), "CLIPCLI_CACHE": str(shared_cache)}
    model = ["--model", TEST_MODEL, "--pretrained", str(random_checkpoint)]
    result = CliRunner().invoke(
        app, ["index", str(folder), "--index", str(index), *model], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    return folder, index


def escaped_path(path: str, folder: Path) -> str:
    """How plain and tsv write one of the hostile paths (the folder's own name is harmless)."""
    return f"{folder}/{HOSTILE[Path(path).name]}"


def search_all(cli, index: Path, *args: str):
    return cli("search", "a red square", "--index", index, "--top-k", "50", *args)


def hits_of(cli, index: Path) -> list[dict]:
    result, hits = cli.json("search", "a red square", "--index", index, "--top-k", "50")
    assert result.exit_code == 0, result.stderr
    assert len(hits) == len(HOSTILE)
    return hits


# -- search ------------------------------------------------------------------------------------


def test_search_in_a_pipe_prints_plain_lines_path_tab_score(cli, hostile):
    folder, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{escaped_path(h['path'], folder)}\t{h['score']:.3f}" for h in hits
    ]
    assert search_all(cli, index, "--format", "plain").stdout == result.stdout


def test_search_tsv_has_a_header_full_precision_and_one_line_per_hit(cli, hostile):
    folder, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index, "--format", "tsv")
    assert result.stdout.splitlines() == ["rank\tpath\tscore"] + [
        f"{h['rank']}\t{escaped_path(h['path'], folder)}\t{h['score']!r}" for h in hits
    ]


def test_search_csv_reads_back_to_the_json_values(cli, hostile):
    _, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index, "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows == [["rank", "path", "score"]] + [
        [str(h["rank"]), h["path"], repr(h["score"])] for h in hits
    ]


def test_search_jsonl_holds_the_objects_of_the_json_array_one_per_line(cli, hostile):
    _, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index, "--format", "jsonl")
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == hits
    assert (
        search_all(cli, index, "--format", "json").stdout == search_all(cli, index, "--json").stdout
    )


def test_search_table_shows_every_path_literally_on_one_row_when_piped(cli, hostile):
    _, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index, "--format", "table")
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"# ┃ +score ┃ path", lines[0])
    rows = lines[2:]
    assert len(rows) == len(hits)  # the 250-character path is not folded
    for row, hit in zip(rows, hits, strict=True):
        shown = hit["path"].replace("\t", "\\t").replace("\n", "\\n").replace("\x1b", "\\x1b")
        assert row == f"{hit['rank']} │ {hit['score']:6.3f} │ {shown}"


def test_paths_only_prints_the_escaped_paths_one_per_line(cli, hostile):
    folder, index = hostile
    hits = hits_of(cli, index)
    result = search_all(cli, index, "--paths-only")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [escaped_path(h["path"], folder) for h in hits]


def test_dash_0_prints_the_paths_byte_for_byte_each_ended_by_nul(cli, hostile):
    _, index = hostile
    hits = hits_of(cli, index)
    for flags in (["-0"], ["--null"], ["--paths-only", "-0"]):
        result = search_all(cli, index, *flags)
        assert result.exit_code == 0, result.stderr
        assert result.stdout_bytes == b"".join(os.fsencode(h["path"]) + b"\0" for h in hits)


# -- classify ----------------------------------------------------------------------------------


@pytest.fixture
def three(tmp_path):
    """Three hostile names in a folder with markup in its name."""
    folder = tmp_path / FOLDER
    for name in ["[red]x.png", "new\nline.png", LONG]:
        make_image(folder / name, "red")
    return folder


LABELS = "[bold]red,:cat:,blue\tish"


def classify_json(cli, model_args, *paths):
    result, data = cli.json("classify", *paths, "--labels", LABELS, "--top-k", "2", *model_args)
    assert data, result.stderr
    return data


def test_classify_plain_is_path_label_probability_per_prediction(cli, model_args, three):
    data = classify_json(cli, model_args, three)
    result = cli("classify", three, "--labels", LABELS, "--top-k", "2", *model_args)
    assert result.exit_code == 0, result.stderr
    expected = []
    for entry in data:
        for p in entry["predictions"]:
            label = p["label"].replace("\t", "\\t")
            expected.append(f"{escaped_path(entry['path'], three)}\t{label}\t{p['score']:.3f}")
    assert len(expected) == 6
    assert result.stdout.splitlines() == expected


def test_classify_tsv_and_csv_carry_rank_similarity_and_error_entries(cli, model_args, three):
    missing = three / "[red]gone.png"
    data = classify_json(cli, model_args, three, missing)
    args = ["classify", three, missing, "--labels", LABELS, "--top-k", "2", *model_args]
    expected = [["path", "rank", "label", "score", "similarity", "error"]]
    for entry in data:
        if "error" in entry:
            expected.append([entry["path"], "", "", "", "", entry["error"]])
        for rank, p in enumerate(entry.get("predictions", []), 1):
            row = [entry["path"], str(rank), p["label"], repr(p["score"]), repr(p["similarity"])]
            expected.append([*row, ""])
    assert expected[-1] == [str(missing), "", "", "", "", "no such file"]

    tsv = cli(*args, "--format", "tsv")
    assert tsv.exit_code == 1  # the missing file, as with every format
    assert tsv.stdout.splitlines() == [
        "\t".join(f.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for f in row)
        for row in expected
    ]
    rows = list(csv.reader(io.StringIO(cli(*args, "--format", "csv").stdout, newline="")))
    assert rows == expected


def test_classify_jsonl_holds_the_objects_of_the_json_array(cli, model_args, three):
    data = classify_json(cli, model_args, three)
    result = cli(
        "classify", three, "--labels", LABELS, "--top-k", "2", "--format", "jsonl", *model_args
    )
    assert [json.loads(line) for line in result.stdout.splitlines()] == data


def test_up_to_three_images_get_a_table_each_with_names_and_labels_literal(cli, model_args, three):
    data = classify_json(cli, model_args, three)
    result = cli(
        "classify", three, "--labels", LABELS, "--top-k", "2", "--format", "table", *model_args
    )
    assert result.exit_code == 0, result.stderr
    blocks = result.stdout.split("\n\n")
    assert blocks[-1] == ""  # each table is followed by a blank line
    for block, entry in zip(blocks[:-1], data, strict=True):
        lines = block.splitlines()
        assert lines[0] == str(three / Path(entry["path"]).name.replace("\n", "\\n"))
        assert re.fullmatch(r"label +┃ probability ┃ +┃ cosine", lines[1])
        for line, p in zip(lines[3:], entry["predictions"], strict=True):
            label = p["label"].replace("\t", "\\t")
            assert line.startswith(f"{label} ") and f"{p['score']:6.1%} │" in line
        assert len(lines) == 3 + 2


def test_more_than_three_images_get_one_line_each(cli, model_args, three):
    make_image(three / "fourth.png", "blue")
    data = classify_json(cli, model_args, three)
    result = cli(
        "classify", three, "--labels", LABELS, "--top-k", "2", "--format", "table", *model_args
    )
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"label +┃ probability ┃ +┃ path +┃ next", lines[0])
    assert len(lines) == 2 + 4
    for line, entry in zip(lines[2:], data, strict=True):
        best, second = entry["predictions"]
        path = entry["path"].replace("\n", "\\n")
        label, next_label = (p["label"].replace("\t", "\\t") for p in (best, second))
        assert line.startswith(f"{label} ")
        assert f" │ {path} " in line
        assert line.endswith(f"│ {next_label} {second['score']:.1%}")


def test_a_file_name_that_is_not_utf8_is_escaped_in_every_format(cli, model_args, tmp_path):
    name = os.fsdecode(b"latin1-\xe9.png")  # "latin1-\udce9.png"
    try:
        image = make_image(tmp_path / name, "red")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    shown = f"{tmp_path}/latin1-\\xe9.png"
    args = ["classify", image, "--labels", "red,blue", "--top-k", "1", *model_args]
    result, data = cli.json(*args)
    assert result.exit_code == 0, result.stderr
    assert data[0]["path"] == shown
    assert json.loads(result.stdout_bytes.decode("utf-8")) == data
    jsonl = cli(*args, "--format", "jsonl")
    assert [json.loads(line) for line in jsonl.stdout_bytes.decode().splitlines()] == data
    best = data[0]["predictions"][0]
    assert cli(*args).stdout_bytes.decode() == f"{shown}\t{best['label']}\t{best['score']:.3f}\n"
    assert cli(*args, "--format", "tsv").stdout.splitlines()[1].startswith(f"{shown}\t1\t")
    assert cli(*args, "--format", "csv").stdout.splitlines()[1].startswith(f"{shown},1,")
    assert cli(*args, "--format", "table").stdout.splitlines()[0] == shown
    gone = tmp_path / os.fsdecode(b"gone-\xff.png")
    missing = cli("classify", gone, "--labels", "a,b", *model_args)
    assert missing.stderr == f"error: {tmp_path}/gone-\\xff.png: no such file\n"


def test_every_format_writes_a_path_that_is_not_utf8_to_a_strict_utf8_stream():
    from clipcli.cli.render import Format, write_paths, write_search
    from clipcli.cli.tables import LITERAL
    from clipcli.search import SearchHit

    hit = SearchHit(1, "/p/latin1-\udce9.jpg", 0.5)

    def written(form: Format) -> str:
        from rich.console import Console

        stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
        write_search(form, [hit], stream, lambda: Console(file=stream, **LITERAL))
        stream.flush()
        return stream.buffer.getvalue().decode("utf-8")

    assert written(Format.plain) == "/p/latin1-\\xe9.jpg\t0.500\n"
    assert written(Format.tsv) == "rank\tpath\tscore\n1\t/p/latin1-\\xe9.jpg\t0.5\n"
    assert written(Format.csv) == "rank,path,score\n1,/p/latin1-\\xe9.jpg,0.5\n"
    assert json.loads(written(Format.jsonl)) == {
        "rank": 1,
        "path": "/p/latin1-\\xe9.jpg",
        "score": 0.5,
    }
    assert json.loads(written(Format.json))[0]["path"] == "/p/latin1-\\xe9.jpg"
    assert written(Format.table).splitlines()[-1] == "1 │ 0.500 │ /p/latin1-\\xe9.jpg"
    binary = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    write_paths([hit], binary, null=True)
    assert binary.buffer.getvalue() == b"/p/latin1-\xe9.jpg\0"


# -- messages on stderr and the index summary -------------------------------------------------


def test_an_error_naming_a_hostile_file_is_one_literal_line(cli, model_args, tmp_path):
    missing = tmp_path / "[red]gone\nnow\t.jpg"
    result = cli("classify", missing, "--labels", "[bold]a,b", *model_args)
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path}/[red]gone\\nnow\\t.jpg: no such file\n"


def test_a_skipped_file_with_a_newline_in_its_name_is_warned_about_on_one_line(
    cli, model_args, tmp_path
):
    folder = tmp_path / "[b]album"
    make_image(folder / "good.png")
    (folder / "bad\nname.jpg").write_bytes(b"")
    result = cli("index", folder, "--index", tmp_path / "index", *model_args)
    assert result.exit_code == 0
    assert result.stderr == f"warning: skipped {folder}/bad\\nname.jpg: empty file (0 bytes)\n"


def test_the_index_summary_is_one_line_whatever_its_length_and_says_1_image(
    cli, model_args, tmp_path
):
    index = tmp_path / ("a-long-index-folder-name-" * 6) / "[red]index"
    make_image(tmp_path / "photos" / "one.png")
    result = cli("index", tmp_path / "photos", "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    _, report = cli.json("index", tmp_path / "photos", "--index", index, *model_args)
    assert re.fullmatch(
        re.escape(f"1 image in {index} ({report['model']}): 1 added, 0 updated, 0 moved, ")
        + r"0 removed, 0 unchanged, 0 skipped in \d+\.\ds\n",
        result.stdout,
    )
    assert len(result.stdout) > 200


# -- a real terminal ---------------------------------------------------------------------------


def on_a_terminal(args: list[str], columns: int) -> tuple[int, str, str]:
    """clipcli as a real process with stdout on a pseudo-terminal `columns` wide."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "FORCE_COLOR"}}
    process = subprocess.Popen(
        [sys.executable, "-m", "clipcli", *args],
        env={**env, "PYTHONPATH": path, "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # Linux: the other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stderr = process.stderr.read().decode()
    process.wait(timeout=300)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode()).replace("\r\n", "\n")
    return process.returncode, text, stderr


def test_a_narrow_terminal_gets_the_index_summary_on_one_line(model_args, tmp_path):
    make_image(tmp_path / "photos" / "one.png")
    index_args = ["index", str(tmp_path / "photos"), "--index", str(tmp_path / "i"), *model_args]
    code, shown, stderr = on_a_terminal(index_args, 40)
    assert code == 0, stderr
    assert re.fullmatch(
        r"1 image in \S+ \(.+\): 1 added, 0 updated, 0 moved, 0 removed, 0 unchanged, "
        r"0 skipped in \d+\.\ds\n",
        shown,
    )


def test_a_terminal_gets_tables_by_default(hostile, model_args, three):
    _, index = hostile
    code, shown, stderr = on_a_terminal(["search", "a red square", "--index", str(index)], 120)
    assert code == 0, stderr
    assert re.fullmatch(r"# ┃ +score ┃ path *", shown.splitlines()[0])
    assert f"{FOLDER}/[red]x.png" in shown and "new\\nline.png" in shown

    make_image(three / "fourth.png", "blue")
    classify = ["classify", str(three), "--labels", LABELS, "--top-k", "2", *model_args]
    code, shown, stderr = on_a_terminal(classify, 80)
    assert code == 0, stderr
    lines = shown.splitlines()
    assert re.fullmatch(r"label +┃ probability ┃ +┃ path *", lines[0])  # no room for "next"
    best = re.compile(r"(\[bold\]red|:cat:|blue\\tish) +│ +\d+\.\d% │")
    assert len([line for line in lines if best.match(line)]) == 4  # a row per image
