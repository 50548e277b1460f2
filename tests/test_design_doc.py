"""docs/design.md's walk-through ("Add a family") runs as written, so the page stays true."""

import os
import re

from tests.helpers import REPO_ROOT
from vizoo.losses import LOSSES


def test_add_a_family_walk_through_runs():
    with open(os.path.join(REPO_ROOT, "docs", "design.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Add a family"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 3
    namespace = {"__name__": "design_doc_walk_through"}
    try:
        for block in blocks:
            exec(compile(block, "docs/design.md (Add a family)", "exec"), namespace)
        assert "mixed_bound" in LOSSES
    finally:
        LOSSES.pop("mixed_bound", None)  # the registry as the package left it
