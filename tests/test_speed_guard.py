"""Speed regression guard: the quick training benchmark runs in seconds and prints vaekit's
throughput as a ratio of a bare PyTorch loop. It fails only if the benchmark breaks or the
ratio collapses (a 5x slowdown), never on ordinary noise; the printed line is the record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_quick_train_speed_benchmark_prints_ratios(capsys):
    out = subprocess.run([sys.executable, "benchmarks/train_speed.py", "--quick", "--data-dir", str(SHARED / "mnist")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ratios = [r["vaekit_vs_bare"] for r in rows if "vaekit_vs_bare" in r]
    assert len(ratios) == 3
    with capsys.disabled():
        print("\nspeed guard (vaekit / bare loop, quick):", ", ".join(f"{r['model']} b{r['batch']}: {r['vaekit_vs_bare']}"
                                                             for r in rows if "vaekit_vs_bare" in r))
    assert min(ratios) > 0.2, rows
    # the ceiling reference does the step's matrix products and nothing else: it must beat any
    # whole step by far (2.5-6x measured), or it is not measuring what it claims
    assert all(r["gemm_only_ex_per_s"] > r["bare_fused_adam_ex_per_s"] for r in rows if "model" in r), rows
