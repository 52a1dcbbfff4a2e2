"""``make chaos`` in its quick form (``python -m scripts.chaos --quick``): its own redis-server with AOF,
``journeyrec serve`` with 2 workers, and under load a ``kill -9`` of Redis, a ``kill -9`` of a worker and
10 model publications of which 4 are damaged. The script checks each promise itself (exit status 1 when
one does not hold); this test runs it and reads the figures it wrote.

Needs ``redis-server`` and ``redis-cli`` on the PATH: skipped without them, failed without them in CI
(where ``JOURNEYREC_TEST_REDIS_URL`` is set, as for the other Redis tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("JOURNEYREC_TEST_REDIS_URL"):
            pytest.fail("redis-server / redis-cli not found, and JOURNEYREC_TEST_REDIS_URL is set (CI)")
        pytest.skip("redis-server / redis-cli not found")
    report = tmp_path_factory.mktemp("chaos") / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.chaos", "--quick", "--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(report.read_text())
    assert body["ok"] is True
    assert body["quick"] is True
    scenarios: dict[str, dict[str, object]] = body["scenarios"]
    return scenarios


def test_redis_kill_loses_no_acknowledged_event(chaos: dict[str, dict[str, object]]) -> None:
    r = chaos["redis_kill"]
    assert r["failures"] == []
    assert r["lost"] == 0
    assert r["stored_twice"] == 0
    assert isinstance(r["acknowledged_events"], int)
    assert r["acknowledged_events"] > 0
    outage = r["during_outage"]
    assert isinstance(outage, dict)
    # answered meanwhile, and only with 503 Retry-After or flagged fallbacks
    assert outage["requests"] > 0
    assert outage["busy"] + outage["fallback"] == outage["requests"]


def test_a_killed_worker_is_replaced_and_no_later_request_fails(chaos: dict[str, dict[str, object]]) -> None:
    r = chaos["worker_kill"]
    assert r["failures"] == []
    assert r["lost_after_kill"] == 0
    assert r["workers_after"] == 2


def test_damaged_publications_fail_no_request(chaos: dict[str, dict[str, object]]) -> None:
    r = chaos["publications"]
    assert r["failures"] == []
    assert r["publications"] == 10
    assert r["damaged"] == 4
    assert r["failed_requests"] == 0
    assert r["workers_serving_last_good"] == 2
    refusals = r["refusals_logged"]
    assert isinstance(refusals, dict)
    assert len(refusals) == 4
    assert all(n >= 2 for n in refusals.values())  # every worker refused every damaged version
