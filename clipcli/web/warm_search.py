"""What the server keeps warm between requests: the index's model (its text encoder from the
start, its image encoder from the first upload on) and the FAISS index in memory.

Each request opens the catalog read-only (a fraction of a millisecond) and compares its
generation with the one the index in memory reflects: when an index run has written since,
the index is brought up to date before the request reads it, from the file the run saved or,
while the run is still writing, from the vectors it committed. SQLite's transactions keep
each read whole, and the index file is replaced atomically; the server itself writes nothing
in the index folder.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcli.errors import ClipcliError
from clipcli.media.formats import is_image_name
from clipcli.query import Filters, KeptTextEncoder, Query, parse_terms, query_vector
from clipcli.search import PhotoHit, allowed_ids, index_model, nearest_photos, require_index
from clipcli.store import vector_index
from clipcli.store.catalog import Catalog

if TYPE_CHECKING:
    from clipcli.encoders.protocols import ImageEncoder
    from clipcli.models.names import ModelSpec
    from clipcli.store.catalog_records import RecordedModel
    from clipcli.vectors import Embeddings


class UnknownPhoto(ClipcliError):
    """A catalog id that names no photo the server may show: not in the catalog, or its file
    gone or not an image file."""


@dataclass(frozen=True)
class Ask:
    """How many hits a search wants, how good they must be, and which photos may be among
    them."""

    top_k: int
    min_score: float | None = None
    filters: Filters | None = None


@dataclass(frozen=True)
class PhotoFile:
    """A photo's file as the server may send it: resolved, a regular file; and the content
    hash the catalog recorded for it (which keys its thumbnail)."""

    id: int
    path: Path
    sha256: str


@dataclass(frozen=True)
class IndexSummary:
    """The /api/info contract."""

    index: str
    model: str
    photos: int
    generation: int


@dataclass
class _Model:
    """The index's model and what embeds queries with it."""

    recorded: tuple[RecordedModel | None, str | None]  # as the catalog names it
    spec: ModelSpec
    texts: KeptTextEncoder
    images: ImageEncoder | None = None  # loaded by the first upload


@dataclass(frozen=True)
class _State:
    """The index in memory, the catalog generation it reflects, and the model."""

    index: Any
    generation: int
    catalog_id: str
    model: _Model


class WarmSearch:
    """Searches over one index folder, the model and the vectors kept in memory."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        """Open the index, load its model's text side and its vectors: IndexMissingError
        when there is no index, or an empty one (no model recorded yet)."""
        require_index(folder)
        self.folder = folder
        self._device = device
        self._lock = threading.Lock()  # one request at a time brings the state up to date
        self._loading_images = threading.Lock()
        with Catalog(folder, read_only=True) as catalog:
            self._state = self._fresh_state(catalog, None)
        self._state.model.texts(["a photo"])  # the first query a user types is answered warm

    def info(self) -> IndexSummary:
        with self._reading() as (catalog, state):
            return IndexSummary(
                str(self.folder), state.model.spec.name, catalog.count(), state.generation
            )

    def search_text(self, text: str, ask: Ask, *, literal: bool = False) -> list[PhotoHit]:
        """The photos nearest a text query (terms added and subtracted, as `clipcli search`
        reads them, unless `literal`); none for a query of only white space."""
        terms = parse_terms(text, literal=literal)
        if not terms:
            return []
        with self._reading() as (catalog, state):
            model = state.model
            vector = query_vector(model.spec, Query(terms), self._device, text_encoder=model.texts)
            return self._nearest(catalog, state, vector, ask)

    def similar(self, photo_id: int, ask: Ask) -> list[PhotoHit]:
        """The photos nearest an indexed photo's own vector, the photo itself left out."""
        with self._reading() as (catalog, state):
            vector = catalog.vectors_for([photo_id]).get(photo_id)
            if vector is None:
                raise UnknownPhoto(f"no photo {photo_id} in the index")
            return self._nearest(catalog, state, vector, ask, leave_out={photo_id})

    def search_vector(self, vector: Embeddings, ask: Ask) -> list[PhotoHit]:
        """The photos nearest a unit vector of the index's model (an uploaded image's)."""
        with self._reading() as (catalog, state):
            return self._nearest(catalog, state, vector, ask)

    def image_encoder(self) -> ImageEncoder:
        """The model's image side, loaded at the first call and kept."""
        model = self._state.model
        with self._loading_images:
            if model.images is None:
                from clipcli.encoders.choose import load_image_encoder

                model.images = load_image_encoder(model.spec, self._device, images=1)
            return model.images

    def photo_file(self, photo_id: int) -> PhotoFile:
        """The file of a catalog id, if the server may send it: the path the catalog lists,
        links followed, must be a regular file with an image's name. A link that now points
        at anything else (a key, a folder, a device) is refused like an id that is unknown."""
        with self._reading() as (catalog, _):
            entry = catalog.entries_for([photo_id]).get(photo_id)
        if entry is None:
            raise UnknownPhoto(f"no photo {photo_id} in the index")
        resolved = Path(os.path.realpath(entry.path))
        try:
            is_file = stat.S_ISREG(os.stat(resolved).st_mode)
        except OSError:
            is_file = False
        if not is_file or not is_image_name(resolved.name):
            raise UnknownPhoto(f"photo {photo_id} is no longer an image file on disk")
        return PhotoFile(photo_id, resolved, entry.sha256)

    def _nearest(
        self,
        catalog: Catalog,
        state: _State,
        vector: Embeddings,
        ask: Ask,
        leave_out: Collection[int] = (),
    ) -> list[PhotoHit]:
        allowed = allowed_ids(catalog, ask.filters)
        return nearest_photos(
            state.index,
            vector,
            ask.top_k,
            catalog,
            min_score=ask.min_score,
            allowed=allowed,
            leave_out=leave_out,
        ).hits

    @contextmanager
    def _reading(self) -> Iterator[tuple[Catalog, _State]]:
        """The catalog, open for this request, and the state brought up to its generation."""
        require_index(self.folder)  # a folder deleted under the server is an error, not a new one
        with Catalog(self.folder, read_only=True) as catalog:
            yield catalog, self._current(catalog)

    def _current(self, catalog: Catalog) -> _State:
        state = self._state
        if (state.generation, state.catalog_id) == (catalog.generation, catalog.catalog_id):
            return state
        with self._lock:
            # Another request may have caught up while this one waited.
            if (self._state.generation, self._state.catalog_id) != (
                catalog.generation,
                catalog.catalog_id,
            ):
                self._state = self._fresh_state(catalog, self._state.model)
            return self._state

    def _fresh_state(self, catalog: Catalog, model: _Model | None) -> _State:
        """The state for the catalog as it is now: the model kept unless the index is now of
        another one (an index run with --reset --model), the index brought up to date in
        memory, never saved (the index run that wrote the catalog saves its own)."""
        if catalog.is_blank:  # a catalog file an index run has only just made
            index_model(self.folder, catalog)  # raises IndexMissingError
        generation, catalog_id = catalog.generation, catalog.catalog_id
        recorded = (catalog.model(), catalog.weights())
        if model is None or model.recorded != recorded:
            spec = index_model(self.folder, catalog)
            model = _Model(recorded, spec, KeptTextEncoder(spec, self._device))
        index = vector_index.refresh(self.folder, catalog, save_to_folder=False)
        return _State(index, generation, catalog_id, model)
