"""Settings: flags over environment over defaults, one clear error per bad value."""

from __future__ import annotations

import pytest

from models.domain import Stage
from models.errors import InvalidInputError
from service.auth import Scope
from service.settings import Settings, load_settings
from service.store.redis_url import parse_cluster_url

KEY_A = "a" * 20
KEY_B = "b" * 20


def test_defaults_without_environment() -> None:
    s = load_settings({}, environ={})
    assert s == Settings()
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.redis_url is None
    assert s.api_keys == ()
    assert s.auth_enabled


def test_environment_is_read_and_converted() -> None:
    env = {
        "JOURNEYREC_MODELS": "/srv/models",
        "JOURNEYREC_REDIS_URL": "redis://localhost:6379/2",
        "JOURNEYREC_API_KEYS": f"{KEY_A}:ingest+read;{KEY_B}:admin",
        "JOURNEYREC_HOST": "0.0.0.0",
        "JOURNEYREC_PORT": "9000",
        "JOURNEYREC_WORKERS": "2",
        "JOURNEYREC_MAX_BATCH": "50",
        "JOURNEYREC_REDIS_SOCKET_TIMEOUT": "0.25",
        "JOURNEYREC_INSECURE_NO_AUTH": "no",
    }
    s = load_settings({}, environ=env)
    assert s.models_dir == "/srv/models"
    assert s.redis_url == "redis://localhost:6379/2"
    assert (s.host, s.port, s.workers, s.max_batch) == ("0.0.0.0", 9000, 2, 50)
    assert s.redis_socket_timeout == 0.25
    assert s.insecure_no_auth is False
    assert [k.scopes for k in s.api_keys] == [frozenset({Scope.INGEST, Scope.READ}), frozenset({Scope.ADMIN})]
    # only digests are kept, never the key text
    assert all(KEY_A not in repr(k) for k in s.api_keys)


def test_flags_win_over_environment_and_none_means_not_given() -> None:
    env = {"JOURNEYREC_PORT": "9000", "JOURNEYREC_HOST": "0.0.0.0"}
    s = load_settings({"port": "9100", "host": None}, environ=env)
    assert s.port == 9100
    assert s.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"JOURNEYREC_PORT": "http"}, "--port / JOURNEYREC_PORT: Expected `int`"),
        ({"JOURNEYREC_PORT": "70000"}, "--port / JOURNEYREC_PORT: Expected `int` <= 65535"),
        ({"JOURNEYREC_WORKERS": "0"}, "--workers / JOURNEYREC_WORKERS: Expected `int` >= 1"),
        ({"JOURNEYREC_SERVER": "gunicorn"}, "--server / JOURNEYREC_SERVER"),
        ({"JOURNEYREC_INSECURE_NO_AUTH": "maybe"}, "JOURNEYREC_INSECURE_NO_AUTH: 'maybe' is not a boolean"),
        ({"JOURNEYREC_REDIS_URL": "http://x"}, "is not a redis://"),
        (
            {"JOURNEYREC_REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2:7000/2"},
            "--redis-url / JOURNEYREC_REDIS_URL: a Redis Cluster has a single database: drop /2",
        ),
        (
            {"JOURNEYREC_REDIS_URL": "rediss+cluster://u:secret@h1:70000"},
            "seed node 'h1:70000' is not host:port",
        ),
        ({"JOURNEYREC_REDIS_URL": "redis+cluster://h1:7000?db=2"}, "takes no query string"),
        ({"JOURNEYREC_REDIS_PREFIX": "has space"}, "--redis-prefix / JOURNEYREC_REDIS_PREFIX"),
        ({"JOURNEYREC_MAX_JSON_DEPTH": "1"}, "--max-json-depth / JOURNEYREC_MAX_JSON_DEPTH"),
        (
            {"JOURNEYREC_MAX_CONCURRENCY": "0"},
            "--max-concurrency / JOURNEYREC_MAX_CONCURRENCY: Expected `int` >= 1",
        ),
        ({"JOURNEYREC_MAX_QUEUED": "-1"}, "--max-queued / JOURNEYREC_MAX_QUEUED: Expected `int` >= 0"),
        (
            {"JOURNEYREC_QUEUE_TIMEOUT_SECONDS": "0"},
            "--queue-timeout-seconds / JOURNEYREC_QUEUE_TIMEOUT_SECONDS",
        ),
        ({"JOURNEYREC_HEADER_READ_TIMEOUT_SECONDS": "0"}, "JOURNEYREC_HEADER_READ_TIMEOUT_SECONDS: Expected"),
        ({"JOURNEYREC_BODY_READ_TIMEOUT_SECONDS": "soon"}, "JOURNEYREC_BODY_READ_TIMEOUT_SECONDS: Expected"),
        (
            {"JOURNEYREC_CATALOG_POLL_SECONDS": "0"},
            "--catalog-poll-seconds / JOURNEYREC_CATALOG_POLL_SECONDS",
        ),
        ({"JOURNEYREC_MAX_CATALOG_BATCH": "0"}, "--max-catalog-batch / JOURNEYREC_MAX_CATALOG_BATCH"),
        ({"JOURNEYREC_EXPLORATION": "buying=0.2"}, "--exploration / JOURNEYREC_EXPLORATION: unknown stage"),
        ({"JOURNEYREC_EXPLORATION": "awareness=1.5"}, "'awareness=1.5' must be <stage>=<share from 0 to 1>"),
        ({"JOURNEYREC_EXPLORATION": "awareness"}, "'awareness' must be <stage>=<share"),
        ({"JOURNEYREC_API_KEYS": "short:read"}, "use at least 16"),
        ({"JOURNEYREC_API_KEYS": f"{KEY_A}:write"}, "unknown scope 'write'"),
        ({"JOURNEYREC_API_KEYS": f"{KEY_A}"}, "entry 1 must look like"),
        ({"JOURNEYREC_API_KEYS": f"{KEY_A}:read;{KEY_A}:admin"}, "entry 2 repeats a key"),
    ],
)
def test_bad_values_name_flag_and_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        load_settings({}, environ=env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_exploration_shares_per_stage() -> None:
    s = load_settings({}, environ={"JOURNEYREC_EXPLORATION": " Awareness=0.2, consideration=0.1 ,"})
    assert s.exploration_shares == {Stage.AWARENESS: 0.2, Stage.CONSIDERATION: 0.1}
    assert load_settings({}, environ={}).exploration_shares == {}


def test_unknown_flag_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown setting 'prot'"):
        load_settings({"prot": 1}, environ={})


def test_settings_are_frozen() -> None:
    s = load_settings({}, environ={})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_worker_settings_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import settings as mod

    monkeypatch.setenv("JOURNEYREC_API_KEYS", f"{KEY_A}:read")
    monkeypatch.delenv(mod.WORKER_SETTINGS_ENV, raising=False)
    s = load_settings({"port": 8123})
    mod.export_for_workers(s)
    # the plain-text keys leave the environment the workers inherit; only digests travel
    assert "JOURNEYREC_API_KEYS" not in mod.os.environ
    assert KEY_A not in mod.os.environ[mod.WORKER_SETTINGS_ENV]
    assert mod.settings_for_worker() == s
    # export_for_workers set it directly: popped directly (monkeypatch.delenv would record the value it set
    # and put it back at teardown, into the environment of every later test, and of the servers they start)
    mod.os.environ.pop(mod.WORKER_SETTINGS_ENV, None)


def test_several_workers_share_a_fresh_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from service import settings as mod

    monkeypatch.setenv("JOURNEYREC_API_KEYS", f"{KEY_A}:read")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv(mod.WORKER_SETTINGS_ENV, raising=False)
    assert mod.export_for_workers(load_settings({"workers": 1})) is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in mod.os.environ
    two = load_settings({"workers": 2, "redis_url": "redis://127.0.0.1:6379/0"}, environ={})
    # the client must not be loaded yet in the serving parent (workers would inherit its storage)
    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)
    d = mod.export_for_workers(two)
    assert d is not None
    try:
        assert d.is_dir()
        assert not any(d.iterdir())
        assert mod.os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(d)
        # an operator's directory wins, and nothing is created
        assert mod.export_for_workers(two) is None
    finally:
        d.rmdir()
        mod.os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        mod.os.environ.pop(mod.WORKER_SETTINGS_ENV, None)


def test_metrics_directory_refused_once_the_client_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import prometheus_client  # noqa: F401 (loaded, as it would be after the app was imported)

    from service import settings as mod

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv(mod.WORKER_SETTINGS_ENV, raising=False)
    two = load_settings({"workers": 2, "redis_url": "redis://127.0.0.1:6379/0"}, environ={})
    with pytest.raises(InvalidInputError, match="prometheus_client was imported"):
        mod.export_for_workers(two)
    mod.os.environ.pop(mod.WORKER_SETTINGS_ENV, None)


def test_a_cluster_url_names_its_seed_nodes() -> None:
    s = load_settings({"redis_url": "redis+cluster://10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002/"}, environ={})
    assert s.redis_url is not None
    parsed = parse_cluster_url(s.redis_url)
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (parsed.ssl, parsed.username, parsed.password) == (False, None, None)
    tls = parse_cluster_url("rediss+cluster://app:p%40ss@cache.example:6379")
    assert (tls.ssl, tls.username, tls.password, tls.nodes) == (
        True,
        "app",
        "p@ss",
        (("cache.example", 6379),),
    )
