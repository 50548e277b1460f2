"""Every ```python block of README.md runs as written: in order, in one fresh interpreter, offline.

The README says so where its snippets start: they form one session (a later block may use a
model or data an earlier one made), run in an empty working directory. The numbers the session
prints and leaves behind (the test log p(x), the bounds, the warm-up schedule, the served
encoder's output) are checked for sanity, not only that the code ran.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")
DIGIT_PIXELS = 64  # the README trains on the 8x8 digits: a uniform Bernoulli model scores 64 log 2 nats


def python_blocks(text):
    """`[(line number, code)]` of the ```python blocks of a Markdown text."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


RUNNER = """
import json, math, sys, time, traceback
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

def numbers(value):
    return {key: float(item) for key, item in value.items() if isinstance(item, (int, float)) and not isinstance(item, bool)}

out = namespace["out"]
summary = {
    "result": numbers(namespace["result"]),
    "exact": numbers(namespace["exact"]),
    "kl_weight": [float(b) for b in namespace["history"].history["kl_weight"]],
    "served": {key: [float(v) for v in value.numpy().ravel()] for key, value in out.items()},
}
print("SUMMARY " + json.dumps(summary))
"""


def test_readme_blocks_are_all_found():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = python_blocks(text)
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```py")]
    assert len(blocks) == len(fences) and all(code.strip() for _, code in blocks), fences


@pytest.mark.slow  # a fresh interpreter trains several models (about 40 s)
def test_every_readme_python_block_runs_and_prints_sane_numbers(tmp_path):
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
    summary = json.loads(result.stdout.split("SUMMARY ", 1)[1])

    # The printed line: nll, elbo, iwae_k, kl, active units, all finite.
    printed = [line for line in result.stdout.splitlines() if re.fullmatch(r"(\S+ ){4}\d+", line.strip())]
    assert len(printed) == 1 and all(math.isfinite(float(v)) for v in printed[0].split()), result.stdout[-2000:]

    uniform = DIGIT_PIXELS * math.log(2)
    r = summary["result"]  # 3 epochs of IWAE-5, k=5000: better than a uniform model, bounds in order
    assert 0 < r["nll"] < uniform and r["log_likelihood"] == pytest.approx(-r["nll"])
    assert r["elbo"] <= r["iwae_k"] + 1e-3 and r["iwae_k"] <= r["log_likelihood"] + 1e-3
    assert r["kl"] >= 0 and 0 <= r["active_units"] <= 50
    assert 0 < summary["exact"]["nll"] < uniform  # the bfloat16-trained model, evaluated in float32
    assert summary["kl_weight"] == pytest.approx([0.0, 0.1])  # the warm-up block's comment
    served = summary["served"]  # the exported encoder of the 50-unit model, served by plain TensorFlow
    assert served and all(math.isfinite(v) for values in served.values() for v in values)
    assert any(len(values) == 50 for values in served.values()), {k: len(v) for k, v in served.items()}
