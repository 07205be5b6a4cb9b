"""Prompts for `generate`: from repeated `--prompt` options or a prompt file.

A prompt file is plain text (one prompt per line, blank lines ignored), a JSON list of
strings or of `{"id": ..., "prompt": ...}` objects (ImageReward's layout), or a JSON object
`{id: prompt}` / `{id: {"prompt": ...}}`. Every prompt gets a stable `prompt_id` (the file's id,
else its line/position number) that names its images and matches rows across runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError


@dataclass(frozen=True)
class Prompt:
    """One prompt of a run: its position, its stable id and its text."""

    index: int
    prompt_id: str
    text: str
    partition: str = ""  # dataset group (COCO megabatch, MJHQ category); "" when none


_SAFE_ID = re.compile(r"[^\w.-]+")


def safe_id(prompt_id: str) -> str:
    """The id as it may appear in a file name (path separators and spaces replaced)."""
    return _SAFE_ID.sub("_", prompt_id)[:80]


def from_texts(texts: list[str]) -> list[Prompt]:
    """Prompts given on the command line, numbered in order."""
    prompts = [Prompt(i, str(i), t.strip()) for i, t in enumerate(texts)]
    for p in prompts:
        if not p.text:
            raise UserError(f"--prompt #{p.index + 1}: empty prompt")
    return prompts


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """Read a txt or JSON prompt file; raise a one-line `UserError` when it is missing, empty or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompt-file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--prompt-file {path}: cannot read it ({err})") from err
    if path.suffix.lower() == ".json":
        pairs = _json_pairs(path, text)
    else:
        pairs = [(str(i), line.strip()) for i, line in enumerate(l for l in text.splitlines() if l.strip())]
    if not pairs:
        raise UserError(f"--prompt-file {path}: holds no prompts")
    ids = [pid for pid, _ in pairs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"--prompt-file {path}: prompt id {dup!r} appears more than once")
    return [Prompt(i, pid, txt) for i, (pid, txt) in enumerate(pairs)]


def _json_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"--prompt-file {path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        raise UserError(f"--prompt-file {path}: expected a JSON list or object of prompts")
    pairs = []
    for key, value in items:
        if isinstance(value, dict):
            key = value.get("id", key)
            value = value.get("prompt")
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"--prompt-file {path}: entry {key!r} has no prompt text")
        pairs.append((str(key), value.strip()))
    return pairs
