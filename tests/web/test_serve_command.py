"""`clipcli serve`: the index resolved and opened, the address printed, uvicorn started on
loopback with quiet logs; any other address refused without --allow-remote. uvicorn itself
is never started here: its `run` is replaced by one that records what it was given, and the
address is taken to be free (whatever else listens on this machine) but in the test of a port
in use."""

from __future__ import annotations

from pathlib import Path

import pytest
from served_index import shapes_index
from starlette.applications import Starlette
from starlette.testclient import TestClient

from clipcli.cli import serve_command

REAL_PORT_CHECK = serve_command._check_free


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("command")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_HOME", str(root / "home"))
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        return shapes_index(root, 6)


@pytest.fixture(autouse=True)
def address_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_command, "_check_free", lambda host, port: None)


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What each uvicorn.run call was given (its app as `app`), instead of running it."""
    import uvicorn

    runs: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append({"app": app, **options}))
    return runs


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import webbrowser

    urls: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *args, **kwargs: urls.append(url))
    return urls


def test_serve_prints_the_address_and_runs_uvicorn_on_loopback_quietly(cli, index, uvicorn_runs):
    result = cli("serve", "--index", index, "--port", "9123")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"serving {index} at http://127.0.0.1:9123/ (Ctrl-C stops)\n"
    assert result.stderr == ""
    [run] = uvicorn_runs
    assert isinstance(run.pop("app"), Starlette)
    assert run == {"host": "127.0.0.1", "port": 9123, "log_level": "warning", "access_log": False}


def test_the_index_comes_from_the_environment_and_the_port_defaults_to_8765(
    cli, index, uvicorn_runs, monkeypatch
):
    monkeypatch.setenv("CLIPCLI_INDEX", str(index))

    result = cli("serve")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"serving {index} at http://127.0.0.1:8765/ (Ctrl-C stops)\n"
    assert uvicorn_runs[0]["port"] == 8765


def test_the_loopback_server_answers_only_this_machine_s_names(cli, index, uvicorn_runs):
    cli("serve", "--index", index)
    app = uvicorn_runs[0]["app"]

    with TestClient(app, base_url="http://localhost:8765") as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"host": "rebound.example"}).status_code == 400


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "photos.lan"])
def test_an_address_other_machines_reach_needs_allow_remote(cli, index, uvicorn_runs, host):
    result = cli("serve", "--index", index, "--host", host)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --host {host} would let other machines search and see your photos; "
        "add --allow-remote if that is what you want, or leave --host out\n"
    )
    assert result.stdout == "" and uvicorn_runs == []


def test_allow_remote_serves_every_host_with_a_warning(cli, index, uvicorn_runs):
    result = cli("serve", "--index", index, "--host", "0.0.0.0", "--allow-remote")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        "warning: serving on 0.0.0.0: anyone who can reach it can see every indexed photo\n"
    )
    assert uvicorn_runs[0]["host"] == "0.0.0.0"
    with TestClient(uvicorn_runs[0]["app"], base_url="http://photos.lan:8765") as client:
        assert client.get("/api/info").status_code == 200


def test_an_ipv6_loopback_address_is_bracketed_in_the_url(cli, index, uvicorn_runs):
    result = cli("serve", "--index", index, "--host", "::1")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"serving {index} at http://[::1]:8765/ (Ctrl-C stops)\n"
    assert uvicorn_runs[0]["host"] == "::1"


def test_no_index_is_exit_1_with_one_line(cli, tmp_path, uvicorn_runs):
    result = cli("serve", "--index", tmp_path / "nothing")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'nothing'}: no index here")
    assert result.stderr.count("\n") == 1
    assert uvicorn_runs == []


def test_a_port_in_use_is_exit_1_with_one_line(cli, index, uvicorn_runs, monkeypatch):
    import socket

    monkeypatch.setattr(serve_command, "_check_free", REAL_PORT_CHECK)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli("serve", "--index", index, "--port", str(port))

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert result.stderr.endswith("; give another --port, or stop what listens there\n")
    assert result.stdout == "" and uvicorn_runs == []


def test_open_opens_the_page_in_the_browser(cli, index, uvicorn_runs, opened):
    result = cli("serve", "--index", index, "--port", "9124", "--open")

    assert result.exit_code == 0, result.stderr
    assert opened == ["http://127.0.0.1:9124/"]


def test_access_log_turns_uvicorn_s_access_log_on(cli, index, uvicorn_runs):
    cli("serve", "--index", index, "--access-log")

    assert uvicorn_runs[0]["access_log"] is True


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_a_port_out_of_range_is_a_usage_error(cli, index, uvicorn_runs, port):
    result = cli("serve", "--index", index, "--port", port)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid value for '--port'")
    assert uvicorn_runs == []


def test_serve_help_imports_neither_the_server_nor_the_models():
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from clipcli.cli.app import app\n"
        "result = CliRunner().invoke(app, ['serve', '--help'])\n"
        "heavy = ['starlette', 'uvicorn', 'numpy', 'faiss', 'torch', 'onnxruntime', 'PIL']\n"
        "print(json.dumps([result.exit_code, [m for m in heavy if m in sys.modules]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert json.loads(out.stdout.splitlines()[-1]) == [0, []]
