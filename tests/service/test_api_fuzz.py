"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis, in process).

Every operation of ``/schema/openapi.json`` is called with inputs schemathesis derives from the document:
schema-valid and schema-violating ones, from its explicit examples, boundary values (coverage phase) and
random generation (fuzzing phase). The app under test serves a real model trained on the simulated
storefront. Every request carries a key holding all scopes, so the inputs reach the handlers rather than
the auth guard, and item ids and categories are often drawn from the storefront catalog, so the related-item
routes answer 200 too, not only 404.

Checked: no response is a 5xx, and every response with a documented status code has a documented
Content-Type and a body that validates against the documented schema. Not checked, because the document
does not say so (yet): which error statuses each route returns (only 200 and Litestar's validation 400 are
documented; 401/403/404/413/422/503 are not), the limits the handlers enforce beyond the document (``k`` in
1..100, prices >= 0, non-empty ids, timestamp syntax), that /health and /metrics need no key (the
document's ``security`` is global) and the Content-Type of /metrics (documented as JSON, served as text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from litestar import Litestar
from litestar.testing import TestClient

from models.recommender import Recommender
from service.app import create_app
from service.auth import API_KEY_HEADER, parse_api_keys
from service.model_holder import ModelHolder
from tests.service.api_fixtures import api_settings, make_app, memory_store
from tests.storefront import storefront_catalog

FUZZ_KEY = "fuzz-all-scopes-key-0123456789"
HEADERS = {API_KEY_HEADER: FUZZ_KEY}
SCHEMA_PATH = "/schema/openapi.json"
MAX_EXAMPLES = 30  # per operation in the fuzzing phase; the examples and coverage phases add a few more
CATALOG_IDS = sorted(c.item_id for c in storefront_catalog())
CATEGORIES = sorted({c.category for c in storefront_catalog() if c.category})


def _served_openapi() -> dict[str, Any]:
    """The document the service serves, read from an app without a model (it depends on neither the model
    nor the keys). schemathesis makes one test per operation at collection time, so it needs the document
    before any fixture exists; its fixture loader (``schemathesis.pytest.from_fixture``) fails under
    pytest 9.2, which dropped the ``Function._nodeid`` it rewrites."""
    app = create_app(api_settings(), store=memory_store(), model_holder=ModelHolder(None))
    with TestClient(app) as client:
        r = client.get(SCHEMA_PATH)
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


OPENAPI = _served_openapi()
schema = schemathesis.openapi.from_dict(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "headers": HEADERS,
            # the key is sent as configured: never generated, dropped or mangled as a "negative" input
            "generation": {"with-security-parameters": False},
            "dictionaries": {"catalog": {"values": CATALOG_IDS}, "categories": {"values": CATEGORIES}},
            "parameters": {
                "item_id": {"dictionary": "catalog", "probability": 0.6},
                "category": {"dictionary": "categories", "probability": 0.5},
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
            },
            # Litestar's PrometheusController documents application/json; it serves the text format
            "operations": [
                {"include-path": "/metrics", "checks": {"content_type_conformance": {"enabled": False}}}
            ],
        }
    ),
)


@pytest.fixture(scope="module")
def fuzz_app(models_dir: Path, recommender: Recommender) -> Litestar:
    app = make_app(models_dir, recommender, api_keys=parse_api_keys(f"{FUZZ_KEY}:ingest+read+catalog+admin"))
    with TestClient(app) as client:
        served = client.get(SCHEMA_PATH).json()
    assert served == OPENAPI, "the app under test serves another document than the one fuzzed"
    return app


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, fuzz_app: Litestar) -> None:
    response = case.call_and_validate(app=fuzz_app, headers=HEADERS)
    # the key reached the app: a 401/403 would mean the guard, not the handler, answered
    assert response.status_code not in (401, 403), response.text
