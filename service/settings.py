"""Service settings: a frozen struct read once at start-up from command-line flags and the environment.

This is the only module of journeyrec that touches ``os.environ``. Precedence: a flag given on the command
line, then the ``JOURNEYREC_*`` environment variable, then the default. Bad values raise
``models.errors.InvalidInputError`` naming the flag and the variable.

Worker processes (Granian/Uvicorn with ``--workers N``) import the app factory afresh; the parent process
hands them the exact settings it validated through one environment variable (``JOURNEYREC_SETTINGS_JSON``,
API keys as sha256 digests only) instead of re-parsing flags it no longer has.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from models.domain import Stage
from models.errors import InvalidInputError
from service.auth import ApiKey, parse_api_keys
from service.store.redis_url import ClusterUrlError, is_cluster_url, parse_cluster_url

WORKER_SETTINGS_ENV = "JOURNEYREC_SETTINGS_JSON"
_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode
_DAY = 86_400

# field -> environment variable; the flag is ``--`` + the field name with dashes (see FLAGS for exceptions)
ENV: dict[str, str] = {
    "models_dir": "JOURNEYREC_MODELS",
    "redis_url": "JOURNEYREC_REDIS_URL",
    "api_keys": "JOURNEYREC_API_KEYS",
    "insecure_no_auth": "JOURNEYREC_INSECURE_NO_AUTH",
    "host": "JOURNEYREC_HOST",
    "port": "JOURNEYREC_PORT",
    "workers": "JOURNEYREC_WORKERS",
    "server": "JOURNEYREC_SERVER",
    "respawn_workers": "JOURNEYREC_RESPAWN_WORKERS",
    "log_level": "JOURNEYREC_LOG_LEVEL",
    "max_body_bytes": "JOURNEYREC_MAX_BODY_BYTES",
    "max_batch": "JOURNEYREC_MAX_BATCH",
    "max_json_depth": "JOURNEYREC_MAX_JSON_DEPTH",
    "max_k": "JOURNEYREC_MAX_K",
    "max_export_visitors": "JOURNEYREC_MAX_EXPORT_VISITORS",
    "redis_prefix": "JOURNEYREC_REDIS_PREFIX",
    "visitor_ttl": "JOURNEYREC_VISITOR_TTL",
    "recent_events": "JOURNEYREC_RECENT_EVENTS",
    "stream_maxlen": "JOURNEYREC_STREAM_MAXLEN",
    "redis_socket_timeout": "JOURNEYREC_REDIS_SOCKET_TIMEOUT",
    "rate_limit_per_minute": "JOURNEYREC_RATE_LIMIT_PER_MINUTE",
    "retry_after": "JOURNEYREC_RETRY_AFTER",
    "model_poll_seconds": "JOURNEYREC_MODEL_POLL_SECONDS",
    "max_concurrency": "JOURNEYREC_MAX_CONCURRENCY",
    "max_queued": "JOURNEYREC_MAX_QUEUED",
    "queue_timeout_seconds": "JOURNEYREC_QUEUE_TIMEOUT_SECONDS",
    "header_read_timeout_seconds": "JOURNEYREC_HEADER_READ_TIMEOUT_SECONDS",
    "body_read_timeout_seconds": "JOURNEYREC_BODY_READ_TIMEOUT_SECONDS",
    "rules_file": "JOURNEYREC_RULES_FILE",
    "rules_poll_seconds": "JOURNEYREC_RULES_POLL_SECONDS",
    "catalog_poll_seconds": "JOURNEYREC_CATALOG_POLL_SECONDS",
    "max_catalog_batch": "JOURNEYREC_MAX_CATALOG_BATCH",
    "exploration": "JOURNEYREC_EXPLORATION",
    "experiments_poll_seconds": "JOURNEYREC_EXPERIMENTS_POLL_SECONDS",
    "experiments_holdout": "JOURNEYREC_EXPERIMENTS_HOLDOUT",
    "journey_analytics": "JOURNEYREC_JOURNEY_ANALYTICS",
    "journey_sweep_seconds": "JOURNEYREC_JOURNEY_SWEEP_SECONDS",
    "analytics_hourly_days": "JOURNEYREC_ANALYTICS_HOURLY_DAYS",
    "analytics_daily_days": "JOURNEYREC_ANALYTICS_DAILY_DAYS",
    "analytics_visitor_sets_days": "JOURNEYREC_ANALYTICS_VISITOR_SETS_DAYS",
    "attribution_click_window_seconds": "JOURNEYREC_ATTRIBUTION_CLICK_WINDOW_SECONDS",
    "attribution_impression_window_seconds": "JOURNEYREC_ATTRIBUTION_IMPRESSION_WINDOW_SECONDS",
    "served_lists_per_visitor": "JOURNEYREC_SERVED_LISTS_PER_VISITOR",
    "log_served_lists": "JOURNEYREC_LOG_SERVED_LISTS",
    "heartbeat_seconds": "JOURNEYREC_HEARTBEAT_SECONDS",
}
FLAGS: dict[str, str] = {"models_dir": "--models"}
_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def flag_name(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the service is configured with. Construct through ``load_settings``.

    The comment above each field is its meaning in the README's settings table (``scripts/readme.py``
    reads it; a field without one fails the README test).
    """

    # the models directory: published versions and the `latest` pointer (`serve` needs one)
    models_dir: str | None = None
    # redis://, rediss:// or unix:// URL of one Redis, or redis+cluster:// / rediss+cluster:// with a
    # Redis Cluster's seed nodes (host:port,host:port...; no /N database); unset: the embedded in-process
    # store (one process only)
    redis_url: str | None = None
    # `KEY:scope+scope;KEY:scope@name` with scopes ingest, read, catalog, admin and keys of 16+ characters
    # (only their sha256 digests are kept; the optional name is what the rules audit records, else keyN, N
    # the entry's place); the server refuses to start without keys unless auth is switched off
    api_keys: tuple[ApiKey, ...] = ()
    # serve without API keys: a local demo only
    insecure_no_auth: bool = False
    # address to bind
    host: str = "127.0.0.1"
    # port to bind
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # worker processes; more than 1 needs Redis
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # the ASGI server that runs the workers
    server: Literal["granian", "uvicorn"] = "granian"
    # start a new worker process when one dies (Granian stops the whole server instead when this is off,
    # and also when a replaced worker dies again within 5.5 s; Uvicorn with 2+ workers always replaces one)
    respawn_workers: bool = True
    # the least severe log records written
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # largest body of POST /v1/events, POST /v1/retargeting/export and POST /v1/items, in bytes (other
    # routes: 64 KiB)
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # most events in one POST /v1/events
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # deepest JSON nesting accepted, checked before the body is decoded
    max_json_depth: Annotated[int, msgspec.Meta(ge=4, le=256)] = 32
    # longest list a request may ask for (`k`)
    max_k: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    # most visitors in one POST /v1/retargeting/export
    max_export_visitors: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    # prefix of every Redis key (deployments sharing one Redis use different prefixes)
    redis_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "journeyrec"
    # seconds a visitor's state is kept after their last event (90 days)
    visitor_ttl: Annotated[int, msgspec.Meta(ge=60)] = 90 * _DAY
    # events kept per visitor (the newest)
    recent_events: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    # approximate length cap of the event stream that `journeyrec export-events` reads (on Redis, each of
    # its 16 shards keeps about a sixteenth of it)
    stream_maxlen: Annotated[int, msgspec.Meta(ge=1000)] = 10_000_000
    # seconds to wait for a Redis reply; a visitor read that times out is asked once more, and a second
    # timeout makes a recommendation fall back (other calls answer 503)
    redis_socket_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    # requests per minute per client address; with Redis the counts are shared by all workers (requests
    # are let through when Redis cannot be reached, refused with 503 when it answers an error); 0 switches
    # the limiter off
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 0
    # seconds sent in Retry-After when the store is unavailable
    retry_after: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 1
    # every worker checks this often whether ``latest`` moved and loads it (0: only POST /v1/models/reload,
    # which reaches one worker of several)
    model_poll_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    # requests one worker process handles at once (health and metrics are not counted); each holds at most
    # one Redis connection at a time, and the worker's Redis pool has this many connections plus a few for
    # the health checks, so an admitted request never waits for a connection. Keep it small: the requests
    # of a worker share one CPU, and a Redis reply waits behind all of them (at most redis_socket_timeout)
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    # requests one worker keeps waiting for a free place beyond max_concurrency; more are answered 503 with
    # Retry-After at once
    max_queued: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 1024
    # seconds a waiting request may wait for a place before it is answered 503 with Retry-After
    queue_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0
    # seconds a client has to send a request's headers once it starts (Granian closes the connection
    # after that; Uvicorn has no such limit)
    header_read_timeout_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=600)] = 10.0
    # seconds a client has to send a whole request body once the service starts reading it; the answer
    # after that is 408
    body_read_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # a JSON merchandising rule set (`{"rules": [...]}`, as PUT /v1/rules takes it) stored at start-up when
    # the store holds no rule set yet; a store that holds one keeps it (change it with PUT /v1/rules)
    rules_file: str | None = None
    # every worker reads the rules version this often (one Redis read) and serves a new rule set when it
    # moved
    rules_poll_seconds: Annotated[float, msgspec.Meta(ge=0.01, le=60)] = 0.2
    # every worker reads the live catalog's version this often (one Redis GET) and, when it moved, builds
    # the model serving the new catalog in a thread beside the live one and swaps it in
    catalog_poll_seconds: Annotated[float, msgspec.Meta(ge=0.01, le=60)] = 0.2
    # most items in one POST /v1/items
    max_catalog_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # share of each stage's product slots kept for the live catalog's new items (no interactions yet),
    # flagged `exploration` in the answer: `stage=share,...` with shares 0 to 1, e.g.
    # `awareness=0.2,consideration=0.1`; empty: off
    exploration: str = ""
    # every worker reads the experiments' version this often (one Redis GET) and follows a change (a new,
    # started or stopped experiment); the same poll brings the fronts of running variants up to date
    experiments_poll_seconds: Annotated[float, msgspec.Meta(ge=0.01, le=60)] = 0.5
    # share of people kept out of every experiment (served the default and counted in none): a hash of the
    # person alone, so the same people whatever the experiments; 0 to below 1
    experiments_holdout: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.0
    # count journey-stage transitions at ingest (GET /v1/analytics/journey reads them); false: ingest only
    # stores events
    journey_analytics: bool = True
    # every worker looks this often for visitors whose stage changed by time alone (an abandoned cart
    # expiring, a customer lapsing) and counts those changes when they take effect, seen again or not;
    # 0: counted only when the visitor is next seen
    journey_sweep_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    # days the hourly journey rollups are kept (and the longest range GET /v1/analytics/journey reads by
    # hour)
    analytics_hourly_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 14
    # days the daily journey rollups are kept (and the longest range GET /v1/analytics/journey reads by day)
    analytics_daily_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 400
    # days the per-period sets of visitor pseudonyms are kept (distinct visitors per stage, funnel,
    # recommendation impact); older periods keep only their counts
    analytics_visitor_sets_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 35
    # a purchase without a recommendation_id is credited to the served list whose click (a product_view
    # carrying the list's id) of the item is the latest within this many seconds before it (7 days)
    attribution_click_window_seconds: Annotated[int, msgspec.Meta(ge=60, le=90 * _DAY)] = 7 * _DAY
    # failing a click, to the list whose impression of the item is the latest within this many seconds
    # before it (1 day); served lists are kept for the longer of the two windows
    attribution_impression_window_seconds: Annotated[int, msgspec.Meta(ge=60, le=90 * _DAY)] = _DAY
    # served lists kept per visitor for attribution (the newest)
    served_lists_per_visitor: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    # keep each list answered to a visitor for attribution (off: answers still carry a recommendation_id,
    # but no event can be credited to them)
    log_served_lists: bool = True
    # every worker writes a heartbeat this often: its id (host:pid), the model version it serves, when it
    # started and when it was last seen (GET /v1/models lists the workers); a worker not heard from for
    # three of these is no longer listed
    heartbeat_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=300)] = 5.0

    def __post_init__(self) -> None:
        self.exploration_shares  # noqa: B018 (raises InvalidInputError naming the setting)
        if self.redis_url is not None:
            where = f"{flag_name('redis_url')} / {ENV['redis_url']}"
            if is_cluster_url(self.redis_url):
                try:
                    parse_cluster_url(self.redis_url)
                except ClusterUrlError as e:
                    raise InvalidInputError(f"{where}: {e}") from None
            elif not re.match(r"^(redis|rediss|unix)://", self.redis_url):
                raise InvalidInputError(
                    f"{where}: {self.redis_url!r} is not a redis://, rediss://, unix://, redis+cluster:// "
                    "or rediss+cluster:// URL"
                )

    @property
    def exploration_shares(self) -> dict[Stage, float]:
        """``exploration`` parsed: stage -> share of its product slots (empty: off)."""
        where = f"{flag_name('exploration')} / {ENV['exploration']}"
        shares: dict[Stage, float] = {}
        for part in (p.strip() for p in self.exploration.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            try:
                stage = Stage(name.strip().lower())
            except ValueError:
                known = ", ".join(s.value for s in Stage)
                raise InvalidInputError(f"{where}: unknown stage {name.strip()!r} (known: {known})") from None
            try:
                share = float(value)
            except ValueError:
                share = math.nan
            if not sep or not 0.0 <= share <= 1.0:
                raise InvalidInputError(f"{where}: {part!r} must be <stage>=<share from 0 to 1>")
            shares[stage] = share
        return shares

    @property
    def models_path(self) -> Path | None:
        return Path(self.models_dir) if self.models_dir else None

    @property
    def auth_enabled(self) -> bool:
        return not self.insecure_no_auth


def _env_value(field: str, raw: str) -> Any:
    name = ENV[field]
    if field == "api_keys":
        return parse_api_keys(raw, source=name)
    if field in ("insecure_no_auth", "journey_analytics", "log_served_lists", "respawn_workers"):
        value = _BOOLS.get(raw.strip().lower())
        if value is None:
            raise InvalidInputError(f"{name}: {raw!r} is not a boolean (use 1/0, true/false, yes/no)")
        return value
    if field == "redis_url" and not raw.strip():
        return None
    return raw.strip()


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from flags (``None`` values are "not given") over environment over defaults.

    ``environ`` defaults to ``os.environ``; tests pass a dict. Raises ``InvalidInputError`` on any bad value,
    naming the flag and the environment variable.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field, name in ENV.items():
        if name in env and env[name] != "":
            raw[field] = _env_value(field, env[name])
    for field, value in (flags or {}).items():
        if field not in ENV:
            raise InvalidInputError(f"unknown setting {field!r}")
        if value is not None:
            raw[field] = value
    if isinstance(raw.get("api_keys"), str):
        raw["api_keys"] = parse_api_keys(raw["api_keys"], source=flag_name("api_keys"))
    try:
        # strict=False: environment values are strings ("8000" -> 8000)
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise InvalidInputError(_name_setting(str(e))) from None


def _name_setting(message: str) -> str:
    """Turn msgspec's "Expected `int` >= 1 - at `$.workers`" into "--workers / JOURNEYREC_WORKERS: ..."."""
    m = re.match(r"^(.*) - at `\$\.(\w+)", message)
    if not m or m.group(2) not in ENV:
        return f"invalid setting: {message}"
    field = m.group(2)
    return f"{flag_name(field)} / {ENV[field]}: {m.group(1)}"


def export_for_workers(settings: Settings) -> Path | None:
    """Hand the validated settings to worker processes through their inherited environment.

    The plain-text keys variable is dropped from this process's environment: workers need only digests.
    With several workers, Prometheus metrics go to a fresh shared directory (``PROMETHEUS_MULTIPROC_DIR``,
    unless the operator set one) so that ``/metrics`` adds up every worker, whichever one answers the
    scrape; that directory is returned for the caller to remove when the server stops.
    """
    os.environ[WORKER_SETTINGS_ENV] = msgspec.json.encode(settings).decode()
    os.environ.pop(ENV["api_keys"], None)
    # one BLAS thread and glibc's malloc thresholds are set by each worker itself at run time
    # (service.process_tuning.tune_worker): Granian forks its workers after numpy is loaded, so
    # environment variables set here would come too late for them
    if settings.workers == 1 or _METRICS_DIR_ENV in os.environ:
        return None
    if "prometheus_client" in sys.modules:
        # the client picks its value storage at import: imported here, forked workers would keep their own
        raise InvalidInputError("internal: prometheus_client was imported before the workers were set up")
    metrics_dir = Path(tempfile.mkdtemp(prefix="journeyrec-metrics-"))
    os.environ[_METRICS_DIR_ENV] = str(metrics_dir)
    return metrics_dir


def settings_for_worker() -> Settings:
    """In a worker process: the settings the parent validated, or (run directly) the environment's."""
    blob = os.environ.get(WORKER_SETTINGS_ENV)
    if blob is None:
        return load_settings()
    try:
        return msgspec.json.decode(blob, type=Settings)
    except msgspec.MsgspecError as e:
        raise InvalidInputError(f"{WORKER_SETTINGS_ENV}: not valid settings: {e}") from None
