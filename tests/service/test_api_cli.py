"""``journeyrec serve`` option handling: bad options are one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from service.cli import cli, run_server
from service.settings import load_settings

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
        (
            [
                "serve",
                "--models",
                "{models}",
                "--redis-url",
                "redis+cluster://127.0.0.1:7101,127.0.0.1:7102/3",
            ],
            {"JOURNEYREC_API_KEYS": KEYS},
            "a Redis Cluster has a single database: drop /3",
        ),
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


def test_granian_gets_the_read_timeout_and_room_above_the_admission_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import granian

    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.update(kwargs)

        def serve(self) -> None:
            seen["served"] = True

    monkeypatch.setattr(granian, "Granian", Recorder)
    env = {
        "JOURNEYREC_HEADER_READ_TIMEOUT_SECONDS": "2.5",
        "JOURNEYREC_MAX_CONCURRENCY": "32",
        "JOURNEYREC_MAX_QUEUED": "100",
        "JOURNEYREC_WORKERS": "2",
    }
    run_server(load_settings({}, environ=env))
    assert seen["served"]
    assert seen["http1_settings"].header_read_timeout == 2500  # Granian counts milliseconds
    assert seen["backpressure"] > 32 + 100
    assert seen["respawn_failed_workers"] is True  # the default: a dead worker is replaced


def test_granian_respawn_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import granian

    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.update(kwargs)

        def serve(self) -> None:
            pass

    monkeypatch.setattr(granian, "Granian", Recorder)
    run_server(load_settings({}, environ={"JOURNEYREC_RESPAWN_WORKERS": "off"}))
    assert seen["respawn_failed_workers"] is False


_PARENT_IMPORTS = """
import sys
import granian
from service.cli import run_server
from service.settings import load_settings

class Recorder:
    def __init__(self, *args, **kwargs):
        pass

    def serve(self):
        print("prometheus_client" in sys.modules)

granian.Granian = Recorder
run_server(load_settings({"workers": 2}, environ={}))
"""


def test_the_server_process_does_not_load_the_metrics_client() -> None:
    """prometheus_client loaded in the process Granian forks its workers from would make every worker write
    the parent's value files."""
    out = subprocess.run(
        [sys.executable, "-c", _PARENT_IMPORTS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False", out.stderr
