"""Fixtures of the API tests: the app over the storefront model and a memory store, and its client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.recommender import Recommender
from tests.service.api_fixtures import LogRecords, make_app


@pytest.fixture
def app(models_dir: Path, recommender: Recommender) -> Litestar:
    return make_app(models_dir, recommender)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def service_log() -> Iterator[LogRecords]:
    """What the service logs (``journeyrec.service``) during the test."""
    handler = LogRecords()
    logger = logging.getLogger("journeyrec.service")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
