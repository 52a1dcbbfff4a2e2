"""Errors map to HTTP through one table (service.errors.RULES), resolved along the exception's MRO; the
store-error metric is counted where the store fails, once per failure."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from models.errors import (
    ArtifactError,
    DataError,
    EmptyDatasetError,
    InvalidInputError,
    JourneyrecError,
    NotFoundError,
    StoreUnavailableError,
)
from models.recommender import Recommender
from service.api.deps import IdPath
from service.errors import EXCEPTION_HANDLERS, IncompleteBodyError, NotReadyError
from service.store.factory import build_store
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ, api_settings, make_app


class _OddUserError(JourneyrecError):
    """A subclass the table does not list: its closest listed base decides."""


_RAISED: dict[str, Exception] = {
    "store": StoreUnavailableError("the visitor store is unavailable; retry later"),
    "not-ready": NotReadyError("no model loaded yet"),
    "not-found": NotFoundError("unknown item 'x'"),
    "artifact": ArtifactError("reload refused: bad zip"),
    "data": DataError("bad row", path="a.csv", line=3),
    "empty": EmptyDatasetError("no rows left"),
    "validation": InvalidInputError("query parameter 'k': 0 is out of range"),
    "incomplete": IncompleteBodyError("request body incomplete"),
    "odd": _OddUserError("something the caller can fix"),
    "denied": PermissionDeniedException("this API key lacks the admin scope"),
    "bug": RuntimeError("secret internal detail"),
}


@get("/raise/{name:str}", sync_to_thread=False)
def _raise(name: IdPath) -> None:
    raise _RAISED[name]


@pytest.fixture(scope="module")
def raiser() -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        [_raise], exception_handlers=dict(EXCEPTION_HANDLERS), state=State({"settings": api_settings()})
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "status", "detail"),
    [
        ("store", 503, "the visitor store is unavailable; retry later"),
        ("not-ready", 503, "no model loaded yet"),
        ("not-found", 404, "unknown item 'x'"),
        ("artifact", 422, "reload refused: bad zip"),
        ("data", 422, "a.csv:3: bad row"),
        ("empty", 422, "no rows left"),
        ("validation", 400, "query parameter 'k': 0 is out of range"),
        ("incomplete", 400, "request body incomplete"),
        ("odd", 400, "something the caller can fix"),
        ("denied", 403, "this API key lacks the admin scope"),
        ("bug", 500, "internal error; see the server log"),
    ],
)
def test_every_error_maps_through_the_table(
    raiser: TestClient[Litestar], name: str, status: int, detail: str
) -> None:
    r = raiser.get(f"/raise/{name}")
    assert r.status_code == status
    assert r.json() == {"status_code": status, "error": r.json()["error"], "detail": detail}
    retry = "Retry-After" in r.headers
    assert retry == (status == 503)


def _store_errors() -> float:
    return REGISTRY.get_sample_value("journeyrec_store_unavailable_total") or 0.0


def test_store_errors_are_counted_once_per_failure(models_dir: Path, recommender: Recommender) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    store = build_store(api_settings(redis_url=dead))
    with TestClient(make_app(models_dir, recommender, store=store), raise_server_exceptions=False) as c:
        before = _store_errors()
        r = c.get("/v1/visitors/v/recommendations", headers=H_READ)
        assert r.status_code == 200
        assert r.json()["fallback"] is True
        assert _store_errors() == before + 1
        r = c.get("/v1/visitors/v/journey", headers=H_READ)
        assert r.status_code == 503
        assert _store_errors() == before + 2
        r = c.post(
            "/v1/events", json={"visitor_id": "v", "item_id": "i", "event": "page_view"}, headers=H_INGEST
        )
        assert r.status_code == 503
        assert _store_errors() == before + 3
        r = c.delete("/v1/visitors/v", headers=H_ADMIN)
        assert r.status_code == 503
        assert _store_errors() == before + 4  # erase was not counted at all when each handler counted
