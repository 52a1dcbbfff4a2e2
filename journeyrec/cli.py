"""The ``journeyrec`` command: training commands and service commands under one name.

Usage and data errors print one line on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from models.errors import JourneyrecError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """journeyrec: journey-stage-aware recommendations (train, evaluate, simulate, inspect, serve)."""


def _register() -> None:
    from journeyrec.retrain_cli import retrain_command
    from service.cli import COMMANDS as SERVICE_COMMANDS
    from training.cli import register as register_training

    register_training(cli)
    for cmd in SERVICE_COMMANDS:
        cli.add_command(cmd)
    cli.add_command(retrain_command)


def main(argv: list[str] | None = None) -> int:
    _register()
    try:
        cli.main(args=argv, prog_name="journeyrec", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo("journeyrec: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"journeyrec: {e.format_message()}".replace("\n", " "), err=True)
        return 2
    except JourneyrecError as e:
        click.echo(f"journeyrec: {e}".replace("\n", " "), err=True)
        return 2
    except FileNotFoundError as e:
        click.echo(f"journeyrec: {e.filename}: no such file or directory", err=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
