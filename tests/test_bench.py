"""Every benchmark script in bench/ still imports and parses its options: the figures in the docs come from
them, so one that no longer runs is a broken promise (bench/score.py imported a name that had moved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one process for all of them (each imports torch): run each as __main__ with --help, which exits 0
_RUNNER = """
import json, runpy, sys
failed = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
        failed[path] = "did not exit after --help"
    except SystemExit as exc:
        if exc.code not in (0, None):
            failed[path] = f"exit {exc.code}"
    except Exception as exc:
        failed[path] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_bench_script_imports_and_shows_its_help():
    scripts = sorted(str(p) for p in (ROOT / "bench").glob("*.py"))
    assert len(scripts) >= 10
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _RUNNER, *scripts], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
