"""The server behind `clipcli serve`: the search page, and the JSON API it is built on.

    GET  /                      the page (static/index.html); GET /static/NAME: its files
    GET  /api/info              {"index", "model", "photos", "generation"}
    GET  /api/search?q=         hits for a text query, terms added and subtracted unless literal=1
    GET  /api/similar/ID        hits for an indexed photo's own vector, the photo left out
    POST /api/search/image      hits for an uploaded image (form field "image", or the body)
    GET  /thumb/ID, /image/ID   a photo's thumbnail (JPEG), its file as it is

A hit is {"rank", "path", "score", "id"}: the shape of `clipcli search --json`, with the
catalog id by which the page asks for the photo. The searches take top_k, min_score and the
filters under, since, until and ext. Files are only ever named by catalog id, never by a path
from the request. Errors are {"error": message} with the status that fits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clipcli.errors import CatalogUnreadableError, ClipcliError, IndexMissingError, UsageError
from clipcli.search import PhotoHit
from clipcli.web import params
from clipcli.web.responses import SafeJSONResponse, error_response
from clipcli.web.security import LOOPBACK_NAMES, SecurityHeaders
from clipcli.web.uploads import UploadTooLarge, upload_vector, uploaded_image
from clipcli.web.warm_search import UnknownPhoto, WarmSearch

STATIC_FOLDER = Path(__file__).parent / "static"
# The status each of clipcli's errors answers with; any other is the server's own failure.
_STATUS: tuple[tuple[type[ClipcliError], int], ...] = (
    (UnknownPhoto, 404),
    (UploadTooLarge, 413),
    (UsageError, 400),
    (IndexMissingError, 503),  # the index folder went away under the server
    (CatalogUnreadableError, 503),
)


def create_app(
    index_folder: Path,
    *,
    allowed_hosts: Collection[str] | None = LOOPBACK_NAMES,
    static_folder: Path = STATIC_FOLDER,
    device: str = "auto",
) -> Starlette:
    """The app over one index, its model and vectors loaded now (IndexMissingError when
    there is no index to serve). `allowed_hosts` are the Host names it answers (None: any),
    which a loopback server keeps to this machine's own names."""
    search = WarmSearch(index_folder, device)
    routes = [
        Route("/", _page, methods=["GET", "HEAD"]),
        Route("/api/info", _info, methods=["GET"]),
        Route("/api/search", _search_text, methods=["GET"]),
        Route("/api/similar/{id}", _similar, methods=["GET"]),
        Route("/api/search/image", _search_image, methods=["POST"]),
        Route("/thumb/{id}", _thumb, methods=["GET", "HEAD"]),
        Route("/image/{id}", _image, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=static_folder, check_dir=False), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, allowed_hosts=allowed_hosts)],
        exception_handlers={HTTPException: _http_error, ClipcliError: _clipcli_error},
    )
    # "/thumb/7/" is no other address of "/thumb/7": no redirect between the two.
    app.router.redirect_slashes = False
    app.state.search = search
    app.state.static_folder = static_folder
    return app


def _warm(request: Request) -> WarmSearch:
    return request.app.state.search


def hits_json(hits: Sequence[PhotoHit]) -> list[dict[str, Any]]:
    return [
        {"rank": rank, "path": hit.path, "score": hit.score, "id": hit.id}
        for rank, hit in enumerate(hits, start=1)
    ]


async def _page(request: Request) -> Response:
    page = request.app.state.static_folder / "index.html"
    if not page.is_file():
        return error_response(404, f"the page is missing ({page})")
    # Always asked again: a new clipcli must not be served a page cached from the old one.
    return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})


async def _info(request: Request) -> Response:
    summary = await run_in_threadpool(_warm(request).info)
    return SafeJSONResponse(
        {
            "index": summary.index,
            "model": summary.model,
            "photos": summary.photos,
            "generation": summary.generation,
        }
    )


async def _search_text(request: Request) -> Response:
    ask = params.ask_from(request.query_params)
    literal = params.flag(request.query_params, "literal")
    text = request.query_params.get("q", "")
    hits = await run_in_threadpool(_warm(request).search_text, text, ask, literal=literal)
    return SafeJSONResponse(hits_json(hits))


async def _similar(request: Request) -> Response:
    photo = params.photo_id(request.path_params["id"])
    ask = params.ask_from(request.query_params)
    hits = await run_in_threadpool(_warm(request).similar, photo, ask)
    return SafeJSONResponse(hits_json(hits))


async def _search_image(request: Request) -> Response:
    ask = params.ask_from(request.query_params)
    data = await uploaded_image(request)
    search = _warm(request)

    def searched() -> list[PhotoHit]:
        return search.search_vector(upload_vector(data, search.image_encoder), ask)

    return SafeJSONResponse(hits_json(await run_in_threadpool(searched)))


async def _thumb(request: Request) -> Response:
    from clipcli.media.decode import ImageDecodeError
    from clipcli.media.thumbnails import thumbnail_jpeg

    photo = params.photo_id(request.path_params["id"])
    found = await run_in_threadpool(_warm(request).photo_file, photo)
    try:
        data = await run_in_threadpool(thumbnail_jpeg, found.path, sha256=found.sha256)
    except ImageDecodeError as exc:
        raise UnknownPhoto(f"photo {photo} cannot be drawn ({exc.reason})") from None
    return Response(data, media_type="image/jpeg")


async def _image(request: Request) -> Response:
    import mimetypes

    photo = params.photo_id(request.path_params["id"])
    found = await run_in_threadpool(_warm(request).photo_file, photo)
    media_type = mimetypes.guess_type(found.path.name)[0] or "application/octet-stream"
    return FileResponse(found.path, media_type=media_type)


def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own errors (no such route, a method not allowed, a form it cannot parse) as
    JSON like every other."""
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _clipcli_error(request: Request, exc: ClipcliError) -> Response:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    message = exc.message + (f"; {exc.hint}" if exc.hint else "")
    return error_response(status, message)
