"""`kboost-rt demo` (what `make demo` runs) completes and reports each part."""

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path):
    cli = Path(sys.executable).parent / "kboost-rt"
    result = subprocess.run(
        [cli, "demo", "--seconds", "0.5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "max |stream-offline|" in out and "Native engines" in out
    assert "hints " in out and "on time" in out
    assert (tmp_path / "boosted_s1.wav").is_file() and (tmp_path / "boosted_s2.wav").is_file()
