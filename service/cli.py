"""``journeyrec serve``, ``journeyrec export-events`` and ``journeyrec export-catalog``: the operator's
commands.

Every option also comes from the environment (``JOURNEYREC_*``, see ``service.settings``). Options are
taken as text and validated in one place (``load_settings``), so any bad value is reported as one line
naming the flag and the variable, with exit status 2.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from models.errors import InvalidInputError, JourneyrecError
from service.auth import check_auth_configured
from service.rules_file import load_rules_file
from service.settings import ENV, Settings, export_for_workers, load_settings

APP_FACTORY = "service.app:app_from_environment"
#: Granian's default listen backlog, of which it gives each worker an equal share of connections
GRANIAN_BACKLOG = 1024


class OneLineError(click.ClickException):
    """Printed as one line ``Error: ...``; exit status 2 like every journeyrec CLI error."""

    exit_code = 2


class OneLineCommand(click.Command):
    """Click's own usage errors (unknown option, missing value) as one line and exit 2 too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise OneLineError(f"{ctx.command_path}: {e.format_message()}") from None


def _opt(flag: str, field: str, help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(flag, field, default=None, metavar="VALUE", help=f"{help_text} [env {ENV[field]}]")


def _settings(flags: dict[str, Any]) -> Settings:
    try:
        return load_settings(flags)
    except JourneyrecError as e:
        raise OneLineError(str(e)) from None


@click.command("serve", cls=OneLineCommand)
@_opt("--models", "models_dir", "Models directory (with a `latest` pointer).")
@_opt("--redis-url", "redis_url", "Redis URL; without it the embedded one-process store is used.")
@_opt("--host", "host", "Address to bind (default 127.0.0.1).")
@_opt("--port", "port", "Port (default 8000).")
@_opt("--workers", "workers", "Worker processes (default 1; more than 1 needs Redis).")
@_opt("--server", "server", "granian (default) or uvicorn.")
@_opt("--log-level", "log_level", "debug, info, warning or error.")
@click.option(
    "--insecure-no-auth",
    "insecure_no_auth",
    is_flag=True,
    default=None,
    help=f"Serve without API keys (local demo only). [env {ENV['insecure_no_auth']}]",
)
def serve(**flags: Any) -> None:
    """Serve the recommendation API.

    API keys come from JOURNEYREC_API_KEYS, e.g. 'KEY1:ingest+read;KEY2:admin' (each key 16+ characters).
    """
    settings = _settings(flags)
    try:
        check_serve_settings(settings)
    except JourneyrecError as e:
        raise OneLineError(str(e)) from None
    store = settings.redis_url or "embedded in-process store"
    click.echo(
        f"journeyrec serving http://{settings.host}:{settings.port} "
        f"(models {settings.models_dir}, {store}, {settings.workers} worker(s), {settings.server}, "
        f"{settings.max_concurrency} requests at once per worker)",
        err=True,
    )
    metrics_dir = export_for_workers(settings)
    try:
        run_server(settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def check_serve_settings(settings: Settings) -> None:
    """Refuse settings the server cannot run with, before any worker starts."""
    check_auth_configured(settings.api_keys, settings.insecure_no_auth)
    if not settings.models_dir:
        raise InvalidInputError(f"--models / {ENV['models_dir']}: a models directory is required")
    if not Path(settings.models_dir).is_dir():
        raise InvalidInputError(f"--models / {ENV['models_dir']}: {settings.models_dir} is not a directory")
    if settings.rules_file:
        load_rules_file(settings.rules_file)
    if settings.workers > 1 and not settings.redis_url:
        raise InvalidInputError(
            f"--workers {settings.workers} needs --redis-url: the embedded store lives in one process"
        )


def run_server(settings: Settings) -> None:
    """Run Granian or Uvicorn; every worker builds the app with ``app_from_environment``."""
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            proxy_headers=False,  # never trust X-Forwarded-For unless a proxy is configured for it
            # no limit_concurrency: Uvicorn would answer 503 without Retry-After before the admission gate
            # (service.admission) sees the request; Uvicorn has no header read timeout
        )
        return
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    Granian(
        APP_FACTORY,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        interface=Interfaces.ASGI,
        factory=True,
        log_level=LogLevels(settings.log_level),
        # a worker killed (OOM killer, kill -9) is replaced instead of stopping every worker
        respawn_failed_workers=settings.respawn_workers,
        # connections accepted per worker: above what the admission gate holds, so that excess requests
        # get a 503 from the gate instead of waiting unseen in the listen backlog
        backpressure=granian_backpressure(settings),
        http1_settings=HTTP1Settings(header_read_timeout=round(settings.header_read_timeout_seconds * 1000)),
    ).serve()


def granian_backpressure(settings: Settings) -> int:
    """Connections Granian accepts per worker (each holds its place while kept alive, idle or not): every
    request the admission gate holds (in progress or waiting, see ``service.admission``) plus Granian's own
    default share (listen backlog / workers) for kept-alive connections and the ungated paths. With less,
    excess connections would wait un-accepted in the listen backlog, where no 503 reaches them."""
    return settings.max_concurrency + settings.max_queued + GRANIAN_BACKLOG // settings.workers


@click.command("export-events", cls=OneLineCommand)
@_opt("--redis-url", "redis_url", "Redis URL holding the event stream.")
@_opt("--redis-prefix", "redis_prefix", "Key prefix (default journeyrec).")
@click.option(
    "--out", "out", required=True, metavar="FILE", help="JSON Lines file to write (training input)."
)
@click.option("--after", default="0", show_default=True, metavar="ID", help="Export stream entries after ID.")
def export_events_command(redis_url: str | None, redis_prefix: str | None, out: str, after: str) -> None:
    """Turn the service's event stream into a training file (closing the loop)."""
    settings = _settings({"redis_url": redis_url, "redis_prefix": redis_prefix})
    if not settings.redis_url:
        raise OneLineError(f"--redis-url / {ENV['redis_url']}: required to export the event stream")
    import asyncio

    from service.export import export_events

    try:
        summary = asyncio.run(export_events(settings, Path(out), after=after))
    except JourneyrecError as e:
        raise OneLineError(str(e)) from None
    click.echo(str(summary), err=True)


@click.command("export-catalog", cls=OneLineCommand)
@_opt("--models", "models_dir", "Models directory: the live model's catalog (its `latest`).")
@_opt("--redis-url", "redis_url", "Redis URL holding the live catalog.")
@_opt("--redis-prefix", "redis_prefix", "Key prefix (default journeyrec).")
@click.option("--out", "out", required=True, metavar="FILE", help="Catalog CSV to write (training input).")
def export_catalog_command(
    models_dir: str | None, redis_url: str | None, redis_prefix: str | None, out: str
) -> None:
    """Write the trained catalog merged with the live catalog as the catalog CSV `train --catalog` reads,
    so that the next model learns the new items. Hidden and retired items are written, flagged in the
    hidden and retired columns (training reads only the native columns)."""
    settings = _settings({"models_dir": models_dir, "redis_url": redis_url, "redis_prefix": redis_prefix})
    if not settings.redis_url:
        raise OneLineError(f"--redis-url / {ENV['redis_url']}: required to export the live catalog")
    if not settings.models_dir:
        raise OneLineError(f"--models / {ENV['models_dir']}: required (the trained catalog)")
    import asyncio

    from service.export_catalog import export_catalog

    try:
        summary = asyncio.run(export_catalog(settings, Path(out)))
    except JourneyrecError as e:
        raise OneLineError(str(e)) from None
    click.echo(str(summary), err=True)


@click.group("service")
def cli() -> None:
    """journeyrec service commands."""


cli.add_command(serve)
cli.add_command(export_events_command)
cli.add_command(export_catalog_command)
COMMANDS: Sequence[click.Command] = (serve, export_events_command, export_catalog_command)


def main() -> None:  # pragma: no cover - thin entry point
    cli(prog_name="journeyrec")
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
