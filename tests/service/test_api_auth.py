"""API keys over HTTP: 401 without or with a wrong key, 403 with the wrong scope, health stays open."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.errors import InvalidInputError
from models.recommender import Recommender
from service.app import create_app
from service.model_holder import ModelHolder
from service.settings import load_settings
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ, event, make_app, memory_store

Client = TestClient[Litestar]
EVENT = event("auth-v", "auth-i", "page_view")


def test_missing_and_invalid_keys_are_401(client: Client) -> None:
    r = client.post("/v1/events", json=EVENT)
    assert r.status_code == 401
    assert r.json()["detail"] == "missing X-API-Key header"
    assert r.headers["WWW-Authenticate"] == "X-API-Key"
    r = client.get("/v1/visitors/v/recommendations", headers={"X-API-Key": "wrong-key-wrong-key"})
    assert r.status_code == 401
    assert r.json()["detail"] == "invalid API key"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/v1/events", H_READ),
        ("POST", "/v1/events", H_ADMIN),
        ("GET", "/v1/visitors/v/recommendations", H_ADMIN),
        ("DELETE", "/v1/visitors/v", H_INGEST),
        ("POST", "/v1/models/reload", H_INGEST),
        ("POST", "/v1/models/reload", H_READ),
    ],
)
def test_wrong_scope_is_403(client: Client, method: str, path: str, headers: dict[str, str]) -> None:
    r = client.request(method, path, json=EVENT, headers=headers)
    assert r.status_code == 403, r.text
    assert "lacks the" in r.json()["detail"]


def test_right_scopes_pass(client: Client) -> None:
    assert client.post("/v1/events", json=EVENT, headers=H_INGEST).status_code == 200
    assert client.get("/v1/visitors/auth-v/recommendations", headers=H_READ).status_code == 200
    assert client.get("/v1/models", headers=H_ADMIN).status_code == 200
    assert client.get("/v1/models", headers=H_READ).status_code == 200
    assert client.delete("/v1/visitors/auth-v", headers=H_ADMIN).status_code == 200


def test_auth_is_checked_before_the_body_is_read(client: Client) -> None:
    r = client.post("/v1/events", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_health_metrics_and_schema_need_no_key(client: Client) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/schema/openapi.json").status_code == 200


def test_refuses_to_start_without_keys(models_dir: Path, recommender: Recommender) -> None:
    holder = ModelHolder.with_model(recommender, models_dir)
    with pytest.raises(InvalidInputError, match="no API keys configured"):
        create_app(load_settings({}, environ={}), store=memory_store(), model_holder=holder)


def test_insecure_no_auth_serves_without_keys(models_dir: Path, recommender: Recommender) -> None:
    holder = ModelHolder.with_model(recommender, models_dir)
    settings = load_settings({"insecure_no_auth": True}, environ={})
    with TestClient(create_app(settings, store=memory_store(), model_holder=holder)) as c:
        assert c.post("/v1/events", json=EVENT).status_code == 200
        assert c.post("/v1/models/reload").status_code == 200


def test_rate_limit_answers_429(models_dir: Path, recommender: Recommender) -> None:
    app = make_app(models_dir, recommender, rate_limit_per_minute=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/v1/visitors/rl/recommendations", headers=H_READ).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert c.get("/v1/visitors/rl/recommendations", headers=H_READ).json()["error"] == "too_many_requests"
        assert c.get("/health/live").status_code == 200  # probes are not limited
