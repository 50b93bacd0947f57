"""bench/balance.py's smoke mode: the simulator drives the agent's decision code and, on the same
seeded scenarios, beats round-robin and opportunity cost with fewer than one migration per job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_balance_simulator_smoke() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "balance.py"), "--smoke", "--sizes", "8,16"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for name in ("round-robin", "random", "least-loaded", "opp-cost", "omview"):
        assert name in out
    assert out.count("PASS") == 6 and "MISS" not in out


def test_simulator_imports_the_agents_decision_code() -> None:
    text = (ROOT / "bench" / "balance.py").read_text()
    assert "from omview.agent.migration import decide" in text and "decide.decide(" in text
