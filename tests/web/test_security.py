"""What keeps the server to its page: the security headers on every response, errors and
files included; the Host check against DNS rebinding; writes only from the page's own origin;
the page and its static files."""

from __future__ import annotations

from pathlib import Path

import pytest
from served_index import LOCAL_URL, local_client, png_claiming, shapes_index
from starlette.testclient import TestClient

from clipcli.web.app import create_app
from clipcli.web.security import host_name, is_loopback


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("secured")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_HOME", str(root / "home"))
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        return shapes_index(root, 12)


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """A stand-in for the page's folder: an index.html and a script."""
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>stand-in</title>")
    (folder / "app.js").write_text("// stand-in\n")
    return folder


@pytest.fixture
def client(index: Path, static: Path):
    with local_client(create_app(index, static_folder=static)) as client:
        yield client


def first_id(client: TestClient) -> int:
    return client.get("/api/search", params={"q": "a shape", "top_k": 1}).json()[0]["id"]


REQUESTS = {
    "the page": ("GET", "/", None),
    "a static file": ("GET", "/static/app.js", None),
    "a static file that is not there": ("GET", "/static/none.js", None),
    "a search": ("GET", "/api/search?q=a+star", None),
    "the summary": ("GET", "/api/info", None),
    "a thumbnail": ("GET", "/thumb/{id}", None),
    "an image": ("GET", "/image/{id}", None),
    "an unknown id": ("GET", "/image/abc", None),
    "a bad parameter": ("GET", "/api/search?q=a&top_k=x", None),
    "no such route": ("GET", "/nowhere", None),
    "a method not allowed": ("PUT", "/api/search", None),
    "a bomb": ("POST", "/api/search/image", png_claiming(20_000, 20_000)),
    "a foreign Host": ("GET", "/api/info", "host"),
}


@pytest.mark.parametrize("what", list(REQUESTS))
def test_every_response_carries_the_security_headers(client, what):
    method, path, extra = REQUESTS[what]
    headers = {"host": "rebound.example:8765"} if extra == "host" else {}
    content = extra if isinstance(extra, bytes) else None

    response = client.request(
        method, path.format(id=first_id(client)), headers=headers, content=content
    )

    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' blob: data:" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cross-origin-resource-policy"] == "same-origin"


def test_the_page_and_its_files_are_served_from_the_static_folder(client, static):
    page, script = client.get("/"), client.get("/static/app.js")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == (static / "index.html").read_text()
    assert script.status_code == 200 and script.text == "// stand-in\n"


def test_without_a_page_the_root_is_a_404_that_says_so(index, tmp_path):
    with local_client(create_app(index, static_folder=tmp_path / "nothing")) as client:
        response = client.get("/")

    assert response.status_code == 404
    assert "the page is missing" in response.json()["error"]


def test_the_page_that_ships_is_served_when_it_is_there(index):
    from clipcli.web.app import STATIC_FOLDER

    if not (STATIC_FOLDER / "index.html").is_file():
        pytest.skip("no page in clipcli/web/static yet")
    with local_client(create_app(index)) as client:
        response = client.get("/")

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765", "127.0.0.1"]
)
def test_a_loopback_server_answers_this_machine_s_own_names(client, host):
    assert client.get("/api/info", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["rebound.example:8765", "127.0.0.1.rebound.example", "192.168.1.2:8765", ""]
)
def test_a_loopback_server_refuses_any_other_host_dns_rebinding_would_send(client, host):
    response = client.get("/api/info", headers={"host": host})

    assert response.status_code == 400
    assert "unexpected Host" in response.json()["error"]


def test_a_server_open_to_other_machines_answers_any_host(index):
    with TestClient(create_app(index, allowed_hosts=None), base_url="http://photos.lan") as client:
        assert client.get("/api/info").status_code == 200


def test_an_upload_from_a_page_of_another_origin_is_refused(client):
    foreign = client.post(
        "/api/search/image", content=b"x", headers={"origin": "http://elsewhere.example"}
    )
    own = client.post("/api/search/image", content=b"x", headers={"origin": LOCAL_URL})

    assert foreign.status_code == 403
    assert own.status_code == 400  # past the origin check: the body is not an image


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("photos.lan", False),
    ],
)
def test_loopback_addresses_are_told_from_others(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"), ("localhost", "localhost")],
)
def test_the_host_name_is_the_header_without_its_port(header, name):
    assert host_name(header) == name


def test_a_bug_answers_500_with_the_headers_and_keeps_its_traceback(index, monkeypatch):
    from clipcli.web.warm_search import WarmSearch

    def broken(self: WarmSearch) -> None:
        raise RuntimeError("a bug")

    app = create_app(index)
    monkeypatch.setattr(WarmSearch, "info", broken)
    with TestClient(app, base_url=LOCAL_URL, raise_server_exceptions=False) as client:
        response = client.get("/api/info")
    with TestClient(app, base_url=LOCAL_URL) as client, pytest.raises(RuntimeError, match="a bug"):
        client.get("/api/info")

    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
