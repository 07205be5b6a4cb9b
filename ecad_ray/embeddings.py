"""The embeddings store: text-encoder outputs kept on disk so prompts are encoded once.

Layout under a store root:
    [<partition>/]shard-<id>.safetensors   one tensor per embedding key, stacked over the
                                           shard's prompts; the header metadata lists the
                                           model, family and every prompt (id, text, negative)
    index.parquet                          one row per prompt: where its embeddings live
The shard headers are the source of truth; `index.parquet` is rebuilt from them whenever it
does not match the shards on disk, so an interrupted run never leaves the store inconsistent.
Every record carries the model that made it: embeddings from another model are refused.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ecad_ray.atomic import atomic_path, write_table_atomic
from ecad_ray.errors import UserError, one_line

FORMAT = "ecad-ray-embeddings/1"
INDEX_NAME = "index.parquet"
INDEX_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("partition", pa.string()),
        ("model", pa.string()),
        ("family", pa.string()),
        ("shard", pa.string()),  # path relative to the store root
        ("row", pa.int32()),  # position of the prompt inside the shard's tensors
    ]
)


@dataclass(frozen=True)
class EmbeddingRef:
    """Where one prompt's embeddings live."""

    shard: str
    row: int


class EmbeddingStore:
    """Read and append embedding shards under one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- writing ---------------------------------------------------------------------------
    def write_shard(
        self,
        tensors: dict[str, torch.Tensor],
        *,
        prompt_ids: list[str],
        prompts: list[str],
        negative_prompts: list[str],
        model: str,
        family: str,
        partition: str = "",
    ) -> str:
        """Write one shard atomically; returns its path relative to the root."""
        folder = self.root / partition if partition else self.root
        folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex[:12]}.safetensors"
        meta = {
            "format": FORMAT,
            "model": model,
            "family": family,
            "partition": partition,
            "prompt_ids": json.dumps(prompt_ids),
            "prompts": json.dumps(prompts),
            "negative_prompts": json.dumps(negative_prompts),
        }
        data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(folder / name) as tmp:
            save_file(data, str(tmp), metadata=meta)
        return str((folder / name).relative_to(self.root))

    # -- reading ---------------------------------------------------------------------------
    def shard_paths(self) -> list[Path]:
        """Every complete shard file (temp files of interrupted writes are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("shard-*.safetensors") if not p.name.startswith("."))

    def index(self, shards: list[Path] | None = None) -> pa.Table:
        """One row per stored prompt; rebuilt from shard headers when `index.parquet` is stale.

        `shards`: the caller's fresh `shard_paths()`, to save listing the store twice."""
        shards = self.shard_paths() if shards is None else shards
        names = sorted(str(p.relative_to(self.root)) for p in shards)
        index_path = self.root / INDEX_NAME
        if index_path.is_file():
            table = pq.read_table(index_path)
            if table.schema.equals(INDEX_SCHEMA) and sorted(set(table.column("shard").to_pylist())) == names:
                return table
        return self._rebuild_index(shards)

    def _rebuild_index(self, shards: list[Path]) -> pa.Table:
        rows: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
        for path in shards:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise UserError(f"{path}: not an ecad-ray embeddings shard (no '{FORMAT}' header)")
            ids = json.loads(meta["prompt_ids"])
            texts = json.loads(meta["prompts"])
            negs = json.loads(meta["negative_prompts"])
            for row, (pid, text, neg) in enumerate(zip(ids, texts, negs)):
                rows["prompt_id"].append(pid)
                rows["prompt"].append(text)
                rows["negative_prompt"].append(neg)
                rows["partition"].append(meta.get("partition", ""))
                rows["model"].append(meta["model"])
                rows["family"].append(meta["family"])
                rows["shard"].append(str(path.relative_to(self.root)))
                rows["row"].append(row)
        return pa.table(rows, schema=INDEX_SCHEMA)

    def save_index(self) -> pa.Table:
        """Write `index.parquet` for the shards on disk (atomically) and return it."""
        table = self._rebuild_index(self.shard_paths())
        self.root.mkdir(parents=True, exist_ok=True)
        write_table_atomic(table, self.root / INDEX_NAME)
        return table

    def lookup(self, model: str, negative_prompt: str | None = None) -> dict[str, EmbeddingRef]:
        """Map prompt text -> where its embeddings are, for one model (and negative prompt).

        Keyed by prompt text, not id: the same prompt embedded under another id is reused.
        """
        shards = self.shard_paths()
        if not shards:
            # a new store: nothing to find. Skipping pyarrow here keeps its pandas import
            # (~0.4 s) out of a fresh run's start, where it overlaps ray.init instead.
            return {}
        table = self.index(shards)
        refs: dict[str, EmbeddingRef] = {}
        for rec in table.to_pylist():
            if rec["model"] != model:
                continue
            if negative_prompt is not None and rec["negative_prompt"] != negative_prompt:
                continue
            refs[rec["prompt"]] = EmbeddingRef(rec["shard"], rec["row"])
        return refs

    def models(self) -> set[str]:
        """The models whose embeddings this store holds."""
        return set(self.index().column("model").to_pylist())

    def require_model(self, model: str) -> None:
        """Refuse a store made by another model, naming both."""
        made_by = self.models()
        if not made_by:
            raise UserError(f"--input-embeddings {self.root}: holds no embeddings shards")
        if model not in made_by:
            raise UserError(
                f"--input-embeddings {self.root}: embeddings were made by model "
                f"{', '.join(sorted(made_by))}, but this run uses model {model}; re-embed with "
                f"--model {model} or run with the model that made them"
            )


class ShardReader:
    """Load rows of embeddings from shards, keeping a few recently used shards in memory."""

    def __init__(self, root: str | Path, max_open: int = 4):
        self.root = Path(root)
        self.max_open = max_open
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def _load(self, shard: str) -> dict[str, torch.Tensor]:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        path = self.root / shard
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001  (safetensors and the OS raise several types)
            raise UserError(
                f"embeddings shard {path} is unreadable ({one_line(err)}): delete it and rerun to embed its "
                "prompts again (or re-embed the store with `ecad-ray embed`)"
            ) from err
        self._cache[shard] = tensors
        while len(self._cache) > self.max_open:
            self._cache.popitem(last=False)
        return tensors

    def gather(self, refs: list[EmbeddingRef]) -> dict[str, torch.Tensor]:
        """Stack the embeddings of `refs` (in order) into batched tensors."""
        parts: dict[str, list[torch.Tensor]] = {}
        for ref in refs:
            for key, tensor in self._load(ref.shard).items():
                parts.setdefault(key, []).append(tensor[ref.row])
        return {k: torch.stack(v) for k, v in parts.items()}
