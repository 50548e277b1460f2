"""Every ```python block of README.md runs as written: in order, in one fresh interpreter, offline.

The README says so where its snippets start: they form one session (a later block may use a
model or data an earlier one made), run in an empty working directory.
"""

import json
import os
import re
import subprocess
import sys

from tests.helpers import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def python_blocks(text):
    """`[(line number, code)]` of the ```python blocks of a Markdown text."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


RUNNER = """
import json, sys, time, traceback
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__readme__"}
for line, code in blocks:
    start = time.perf_counter()
    try:
        exec(compile(code, f"README.md, the block at line {line}", "exec"), namespace)
        print(f"block at line {line}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        print(f"README block at line {line} failed", file=sys.stderr)
        sys.exit(1)
print(f"{len(blocks)} blocks ran")
"""


def test_readme_has_python_blocks():
    with open(README, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 5 and all(code.strip() for _, code in blocks)


def test_every_readme_python_block_runs(tmp_path):
    with open(README, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    env.update(PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(blocks),
        cwd=tmp_path,  # files the snippets write (m.keras, export/, runs/) land here
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"{len(blocks)} blocks ran" in result.stdout
