"""benchmarks/bench_queue.py --quick: every section of the queue benchmark runs, on SQLite and on
PostgreSQL when one is running (otherwise the bench itself says it skipped it). No timings are
checked here; they belong in docs/benchmarks.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_prints_claims_and_preview_delivery() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_queue.py"), "--quick"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Claim + complete" in out and "Preview delivery" in out
    for workers in (1, 2, 4):
        assert any(line.split()[:2] == ["sqlite", str(workers)] for line in out.splitlines())
    assert "in-process TakeBus (baseline)" in out
    if os.environ.get("WAN_STUDIO_TEST_DATABASE_URL"):
        for workers in (1, 2, 4):
            assert any(line.split()[:2] == ["postgresql", str(workers)] for line in out.splitlines())
        shared = next(line for line in out.splitlines() if line.startswith("across processes"))
        assert "nothing arrived" not in shared
    else:
        assert "PostgreSQL skipped: no PostgreSQL" in out
