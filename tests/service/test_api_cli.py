"""``journeyrec serve`` option handling: bad options are one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import cli

KEYS = "cli-key-0123456789abcdef:read"


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["serve", "--models", "{models}", "--port", "abc"], {"JOURNEYREC_API_KEYS": KEYS}, "--port"),
        (["serve", "--models", "{models}"], {}, "no API keys configured"),
        (["serve", "--models", "/no/such/dir"], {"JOURNEYREC_API_KEYS": KEYS}, "is not a directory"),
        (["serve"], {"JOURNEYREC_API_KEYS": KEYS}, "a models directory is required"),
        (
            ["serve", "--models", "{models}", "--workers", "2"],
            {"JOURNEYREC_API_KEYS": KEYS},
            "needs --redis-url",
        ),
        (["serve", "--modles", "x"], {}, "No such option"),
        (["serve", "--models", "{models}"], {"JOURNEYREC_API_KEYS": "k:read"}, "at least 16"),
        (
            ["serve", "--models", "{models}", "--redis-url", "http://x"],
            {"JOURNEYREC_API_KEYS": KEYS},
            "redis://",
        ),
        (["export-events", "--out", "x.jsonl"], {}, "--redis-url"),
    ],
)
def test_bad_options_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    args = [a.replace("{models}", str(tmp_path)) for a in args]
    clean = dict.fromkeys(("JOURNEYREC_API_KEYS", "JOURNEYREC_MODELS", "JOURNEYREC_REDIS_URL"))
    result = CliRunner().invoke(cli, args, env={**clean, **env})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert needle in lines[0]
