"""benchmarks/bench_gpu.py --dry-run: the GPU benchmark's code paths on tiny shapes, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_measures_every_section_and_writes_json_and_markdown(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--dry-run",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert payload["dry_run"] is True and payload["skipped"] == []
    rows = payload["rows"]
    seen = {(r["section"], r["variant"]) for r in rows}
    for variant in ("ti2v-5b", "t2v-a14b"):
        for section in ("targets", "overhead", "official", "decode", "memory"):
            assert (section, variant) in seen, (section, variant)
    assert ("handoff", "t2v-a14b") in seen
    memory = [r for r in rows if r["section"] == "memory"]
    assert {r["measure"].split(", ")[-1] for r in memory} >= {"80gb", "48gb", "fp8", "24gb"}
    assert all(r["reference"] and r["reference"] > 0 for r in memory)  # estimates from shapes
    assert not any(r["note"].startswith("failed") for r in rows)
    overhead = [r for r in rows if r["section"] == "overhead"]
    assert all(r["value"] > 0 and r["reference"] > 0 for r in overhead)
    table = (tmp_path / "bench_gpu.md").read_text()
    assert table.startswith("bench_gpu.py --dry-run") and table.count("\n| ") == len(rows) + 1

