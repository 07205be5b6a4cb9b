"""Prompt files in nameonly's layout for the tests of `dataset` (the demo draws the shapes set)."""

from __future__ import annotations

import json
from pathlib import Path

TEMPLATES = ("a {}", "a small {}", "a large {}")


def write_prompts(path: Path, classes, templates=TEMPLATES) -> Path:
    """`{class: {"metaprompts": [{"index", "metaprompt", "prompts": [{"index", "content"}]}]}}`."""
    data = {c: {"metaprompts": [{"index": 0, "metaprompt": "template",
                                 "prompts": [{"index": i, "content": t.format(c)} for i, t in enumerate(templates)]}]}
            for c in classes}
    path.write_text(json.dumps(data))
    return path
