"""Standard benchmark prompt sets, read lazily as rows `{prompt_id, prompt, partition}`.

Every reader streams its file (a line or one JSON value at a time), so embedding 30k COCO
captions holds no more in memory than embedding 3k. `prompt_id` is stable: it comes from the
file (ImageReward / MJHQ ids) or from the 0-based line/row number, never from the order after
sampling, so a resumed or subsampled run names a prompt the same way. `partition` keeps the
groups benchmarks report on: COCO megabatches (`megabatch_0`, ... of 3000 lines, as ECAD
stores them), MJHQ-30K categories and PartiPrompts categories; it is "" for flat sets.

COCO follows ECAD's `ecad/benchmark/generate_coco_embeddings.py`: it takes exactly 10
megabatches of 3000 lines and names line `j` of megabatch `i` by the number `i*3000 + j`
(so `megabatch_1` starts at `6000`, `megabatch_9` at `54000`). The ids here are those
numbers, unpadded, so they match the names of ECAD's `.pt` files and images. Lines after the
first 10 megabatches are dropped: ECAD never embeds them (its 30k file has 30,003 lines),
and keeping them would add an 11th megabatch that no ECAD result or FID reference has.

Formats (`DATASETS`):
- `file`, `drawbench`: plain text, one prompt per line (blank lines skipped, ids keep counting).
- `coco`: plain text captions, 10 megabatches of `megabatch_size` lines, ids numbered as ECAD's.
- `imagereward`: JSON list of `{"id": ..., "prompt": ...}` (ImageReward's benchmark file).
- `mjhq`: MJHQ-30K `meta_data.json`: `{id: {"prompt": ..., "category": ...}}`.
- `parti`: PartiPrompts TSV with a header `Prompt<TAB>Category<TAB>Challenge<TAB>Note`.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError

DATASETS = ("file", "drawbench", "coco", "imagereward", "mjhq", "parti")
COCO_MEGABATCH = 3000  # lines per COCO megabatch (ECAD's megabatch_0..9 of the 30k captions)
COCO_MEGABATCHES = 10  # megabatches ECAD embeds; later lines are dropped (see the module docstring)
_CHUNK = 1 << 16  # characters read at a time by the streaming JSON reader
_AFTER_VALUE = frozenset(",:]} \t\r\n")  # what may follow a complete JSON value


@dataclass(frozen=True)
class PromptSource:
    """Which prompt set to read and how much of it.

    `limit` keeps K prompts; with `seed` set they are a uniform random sample of the whole
    file (reservoir sampling: memory grows with K, not with the file), listed in file order;
    without `seed` they are the first K. `megabatch_size` only affects `coco` partitions.
    """

    dataset: str  # one of DATASETS: picks the reader
    path: Path  # the prompt file
    limit: int | None = None  # keep at most this many prompts (None = all)
    seed: int | None = None  # sample `limit` prompts at random with this seed (None = first K)
    megabatch_size: int = COCO_MEGABATCH  # COCO lines per `megabatch_<k>` partition

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise UserError(f"--dataset {self.dataset}: choose one of {', '.join(DATASETS)}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit {self.limit}: must be a positive number of prompts")
        if self.megabatch_size < 1:
            raise UserError(f"megabatch size {self.megabatch_size}: must be positive")


def iter_prompts(source: PromptSource) -> Iterator[dict]:
    """Stream the rows `{prompt_id, prompt, partition}` that `source` selects."""
    path = Path(source.path)
    if not path.is_file():
        raise UserError(f"--file-path {path}: no such file")
    rows = _READERS[source.dataset](path, source)
    if source.limit is None:
        return rows
    if source.seed is None:
        return itertools.islice(rows, source.limit)
    return iter(reservoir_sample(rows, source.limit, source.seed))


def iter_batches(rows: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    """Group a row stream into lists of `batch_size` rows (the last may be shorter)."""
    if batch_size < 1:
        raise UserError(f"--prompt-batch-size {batch_size}: must be positive")
    it = iter(rows)
    while batch := list(itertools.islice(it, batch_size)):
        yield batch


def reservoir_sample(rows: Iterable[dict], k: int, seed: int) -> list[dict]:
    """A seeded uniform sample of `k` rows from a stream of unknown length, in stream order."""
    rng = random.Random(seed)
    kept: list[tuple[int, dict]] = []
    for i, row in enumerate(rows):
        if i < k:
            kept.append((i, row))
        else:
            j = rng.randint(0, i)
            if j < k:
                kept[j] = (i, row)
    return [row for _, row in sorted(kept, key=lambda pair: pair[0])]


def partition_name(label: str) -> str:
    """A folder-safe partition name from a category label ("Food & Beverage" -> "food-beverage")."""
    return re.sub(r"[^a-z0-9]+", "-", label.strip().lower()).strip("-")


def _row(prompt_id: str, prompt: str, partition: str = "") -> dict:
    return {"prompt_id": str(prompt_id), "prompt": prompt, "partition": partition}


def _read_lines(path: Path, source: PromptSource) -> Iterator[dict]:
    """One prompt per line; the id is the 0-based line number, zero-padded for sorting."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if text := line.strip():
                yield _row(f"{i:06d}", text)


def coco_number(line: int, megabatch_size: int = COCO_MEGABATCH) -> int:
    """ECAD's name for 0-based COCO line `line`: `i*size + line` in megabatch `i = line // size`."""
    return (line // megabatch_size) * megabatch_size + line


def coco_line(number: int, megabatch_size: int = COCO_MEGABATCH) -> int | None:
    """The COCO line ECAD named `number` (inverse of `coco_number`); None if ECAD has no such name.

    Megabatch `i` holds the numbers `2*i*size ... 2*i*size + size - 1`, so numbers in the gaps
    (3000-5999, 9000-11999, ... for size 3000) and past the 10th megabatch name no line."""
    megabatch, offset = divmod(number, 2 * megabatch_size)
    if number < 0 or offset >= megabatch_size or megabatch >= COCO_MEGABATCHES:
        return None
    return megabatch * megabatch_size + offset


def _read_coco(path: Path, source: PromptSource) -> Iterator[dict]:
    """COCO captions, one per line: ECAD's 10 megabatches, ids numbered as ECAD names its files.

    Only the first `COCO_MEGABATCHES * megabatch_size` lines are read; the rest are dropped
    because ECAD never embeds them (see the module docstring)."""
    size = source.megabatch_size
    for row in _read_lines(path, source):
        line = int(row["prompt_id"])
        if line >= COCO_MEGABATCHES * size:
            return
        row["prompt_id"] = str(coco_number(line, size))
        row["partition"] = f"megabatch_{line // size}"
        yield row


def _read_imagereward(path: Path, source: PromptSource) -> Iterator[dict]:
    """ImageReward's JSON list of `{"id", "prompt"}` objects."""
    for i, item in enumerate(iter_json_items(path)):
        if not isinstance(item, dict) or "prompt" not in item or "id" not in item:
            raise UserError(f"--file-path {path}: item {i} is not an object with 'id' and 'prompt'")
        yield _row(item["id"], str(item["prompt"]).strip())


def _read_mjhq(path: Path, source: PromptSource) -> Iterator[dict]:
    """MJHQ-30K meta data: `{id: {"prompt", "category"}}`; the category is the partition."""
    for key, item in iter_json_items(path, mapping=True):
        if not isinstance(item, dict) or "prompt" not in item or "category" not in item:
            raise UserError(f"--file-path {path}: entry {key!r} lacks 'prompt' or 'category'")
        yield _row(key, str(item["prompt"]).strip(), partition_name(str(item["category"])))


def _read_parti(path: Path, source: PromptSource) -> Iterator[dict]:
    """PartiPrompts TSV; the id is the 0-based data row number, the category the partition."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or "Prompt" not in reader.fieldnames:
            raise UserError(f"--file-path {path}: not a PartiPrompts TSV (no 'Prompt' column)")
        for i, rec in enumerate(reader):
            if text := (rec.get("Prompt") or "").strip():
                yield _row(f"{i:05d}", text, partition_name(rec.get("Category") or ""))


_READERS = {
    "file": _read_lines,
    "drawbench": _read_lines,
    "coco": _read_coco,
    "imagereward": _read_imagereward,
    "mjhq": _read_mjhq,
    "parti": _read_parti,
}


def iter_json_items(path: Path, mapping: bool = False) -> Iterator:
    """Stream the items of a top-level JSON list (or `(key, value)` pairs of an object).

    Reads `_CHUNK` characters at a time and decodes one value at a time, so memory follows
    the largest single item, not the file (MJHQ-30K's meta data is one 30k-entry object).
    """
    opener, closer = ("{", "}") if mapping else ("[", "]")
    with path.open(encoding="utf-8") as f:
        stream = _JsonStream(f, path)
        if stream.peek() != opener:
            raise UserError(f"--file-path {path}: expected {'an object' if mapping else 'a list'} at the top level")
        stream.take(opener)
        if stream.peek() == closer:
            return
        while True:
            if mapping:
                key = stream.value()
                stream.take(":")
                yield str(key), stream.value()
            else:
                yield stream.value()
            if stream.peek() == closer:
                return
            stream.take(",", also=closer)


class _JsonStream:
    """A sliding character window over a text file that decodes one JSON value at a time."""

    def __init__(self, file, path: Path) -> None:
        self.file, self.path = file, path
        self.decoder = json.JSONDecoder()
        self.buf, self.pos = file.read(_CHUNK), 0

    def read_more(self) -> bool:
        """Drop what was consumed and append the next chunk; False at end of file."""
        more = self.file.read(_CHUNK)
        self.buf, self.pos = self.buf[self.pos :] + more, 0
        return bool(more)

    def peek(self) -> str:
        """The next non-space character ("" at end of file), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.read_more():
                return ""

    def take(self, char: str, also: str = "") -> None:
        """Consume `char` (after spaces) or fail naming what was expected."""
        if self.peek() != char:
            expected = f"'{char}' or '{also}'" if also else f"'{char}'"
            raise UserError(f"--file-path {self.path}: invalid JSON (expected {expected})")
        self.pos += 1

    def value(self):
        """Decode the next JSON value, reading more of the file until it is complete."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                if self.read_more():
                    continue
                raise UserError(f"--file-path {self.path}: invalid JSON ({err.msg})") from err
            if (end == len(self.buf) or self.buf[end] not in _AFTER_VALUE) and self.read_more():
                continue  # a number at the chunk's end may be cut short ("3." of "3.25"): again
            self.pos = end
            return value


def embed_prompts(
    rows: Iterable[dict],
    store,
    encoder,
    batch_size: int,
    negative_prompt: str = "",
    progress=None,
) -> tuple[int, int]:
    """Encode every row the store lacks and append it as shards; returns (encoded, skipped).

    `store` is an `ecad_ray.embeddings.EmbeddingStore`, `encoder` an `ecad_ray.engine.TextEncoder`
    (`encoder(prompts, negative_prompts) -> {name: tensor}`, batch first, with `.model_spec`). Rows
    stream through in batches of `batch_size` and each batch becomes one shard per partition,
    so memory stays flat however long the source is. Prompts already stored for this model and
    negative prompt are skipped by id: rerunning after an interruption encodes only the rest.
    """
    model, family = encoder.model_spec.name, encoder.model_spec.family
    done = _stored_ids(store, model, negative_prompt)
    encoded = skipped = 0
    for batch in iter_batches(rows, batch_size):
        todo = [r for r in batch if r["prompt_id"] not in done]
        skipped += len(batch) - len(todo)
        by_partition: dict[str, list[dict]] = {}
        for row in todo:
            by_partition.setdefault(row["partition"], []).append(row)
        for partition, part_rows in by_partition.items():
            prompts = [r["prompt"] for r in part_rows]
            tensors = encoder(prompts, [negative_prompt] * len(prompts))
            store.write_shard(
                tensors,
                prompt_ids=[r["prompt_id"] for r in part_rows],
                prompts=prompts,
                negative_prompts=[negative_prompt] * len(prompts),
                model=model,
                family=family,
                partition=partition,
            )
            done.update(r["prompt_id"] for r in part_rows)
            encoded += len(part_rows)
        if progress:
            progress(encoded, skipped)
    store.save_index()
    return encoded, skipped


def _stored_ids(store, model: str, negative_prompt: str) -> set[str]:
    """Ids already embedded in `store` by `model` with this negative prompt."""
    import pyarrow.compute as pc

    index = store.index()
    if index.num_rows == 0:
        return set()
    mask = pc.and_(pc.equal(index.column("model"), model), pc.equal(index.column("negative_prompt"), negative_prompt))
    return set(index.filter(mask).column("prompt_id").to_pylist())
