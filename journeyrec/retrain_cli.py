"""The ``journeyrec retrain`` command's options. The work is in ``journeyrec.retrain``, imported when the
command runs: it imports the service's stores, whose metrics must not be set up before ``serve`` starts its
workers (``prometheus_client`` in multiprocess mode), so listing the commands must not import it."""

from __future__ import annotations

from typing import Any

import click

from service.cli import OneLineCommand, _opt


@click.command("retrain", cls=OneLineCommand)
@_opt("--redis-url", "redis_url", "Redis URL holding the event stream and the live catalog.")
@_opt("--redis-prefix", "redis_prefix", "Key prefix (default journeyrec).")
@_opt("--models", "models_dir", "Models directory: the live model (`latest`) and where to publish.")
@click.option(
    "--holdout-days", default=7.0, show_default=True, help="Most recent days held out for the gate."
)
@click.option(
    "--margin", default=0.005, show_default=True, help="NDCG@10 the candidate may lose and still publish."
)
@click.option("--preset", default=None, help="Training preset (as `journeyrec train`).")
@click.option("--epochs", type=int, default=None, help="LightFM epochs (default: the preset's).")
@click.option("--resamples", default=1000, show_default=True, help="Bootstrap resamples for the intervals.")
@click.option("--report", "report_path", default=None, metavar="FILE", help="Write the decision as JSON.")
@click.option(
    "--every", default=None, metavar="DURATION", help="Run again every DURATION (24h, 30m); else once."
)
def retrain_command(**options: Any) -> None:
    """Retrain from the event stream; publish only when the candidate is not worse than the live model
    on the held-out days (NDCG@10, within --margin). One trainer at a time (a lease in Redis)."""
    from journeyrec.retrain import run_command

    run_command(**options)
