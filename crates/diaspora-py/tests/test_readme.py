"""The README's Python example runs as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## From Python: `pydiaspora`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "no ```python block in the README's Python section"
    return blocks[0]


def test_the_readme_python_example_runs_as_written(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines == ["['recons/0/2', 'frames/0/2', 'log-reconstruct']", "detector fault: hot pixel"], out.stdout
