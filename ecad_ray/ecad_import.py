"""Import ECAD's per-prompt embedding files into an ecad-ray embeddings store.

ECAD pickles one `.pt` dict per prompt (prompt and negative embeddings with masks for PixArt;
`prompt_embeds` + `pooled_prompt_embeds` for FLUX), named `{i:03d}__prompt_seed:{s:03}.pt` or
`{i:03}__prompt_id:{id}__prompt_seed:{s:03}.pt`, in `megabatch_N/` (COCO) or `<category>/`
(MJHQ) folders. Files are read with `torch.load(weights_only=True)`, which refuses arbitrary
pickled objects; the folder a file sits in becomes its partition.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError
from ecad_ray.families import family_of
from ecad_ray.models.registry import resolve_model

_PROMPT_ID = re.compile(r"__prompt_id:([^_]+(?:_[^_]+)*?)(?:__|$)")


def prompt_id_from_name(stem: str) -> str:
    """`007__prompt_id:abc__prompt_seed:000` -> `abc`; otherwise the leading index or the stem."""
    match = _PROMPT_ID.search(stem)
    if match:
        return match.group(1)
    return stem.split("__", 1)[0]


def _load(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises several types for bad pickles)
        raise UserError(f"{path}: not a weights-only torch file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of embeddings, found {type(data).__name__}")
    return data


def import_ecad_embeddings(src: str | Path, dst: str | Path, model: str, shard_size: int = 256) -> int:
    """Convert every `.pt` under `src` into shards under `dst`; returns the number of prompts."""
    src, dst = Path(src), Path(dst)
    spec = resolve_model(model)
    family = family_of(spec.family)
    if not src.is_dir():
        raise UserError(f"SRC {src}: no such folder")
    files = sorted(src.rglob("*.pt"))
    if not files:
        raise UserError(f"SRC {src}: no .pt embedding files found")
    store = EmbeddingStore(dst)
    groups: dict[str, list[Path]] = {}
    for f in files:
        part = str(f.parent.relative_to(src)) if f.parent != src else ""
        groups.setdefault(part, []).append(f)
    count = 0
    for part, paths in groups.items():
        for start in range(0, len(paths), shard_size):
            chunk = paths[start : start + shard_size]
            tensors: dict[str, list[torch.Tensor]] = {k: [] for k in family.keys}
            ids, prompts, negs = [], [], []
            for path in chunk:
                data = _load(path)
                missing = [k for k in family.keys if k not in data]
                if missing:
                    raise UserError(
                        f"{path}: lacks {', '.join(missing)} needed for {spec.family} model {spec.name}"
                    )
                for key in family.keys:
                    value = data[key]
                    tensors[key].append(value[0] if value.dim() > 1 and value.shape[0] == 1 else value)
                ids.append(prompt_id_from_name(path.stem))
                prompts.append(str(data.get("prompt", ids[-1])))
                negs.append(str(data.get("negative_prompt", "")))
            stacked = {}
            for key, values in tensors.items():
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) > 1:
                    raise UserError(f"{src}/{part}: {key} has differing shapes {sorted(shapes)}")
                stacked[key] = torch.stack(values)
            store.write_shard(
                stacked,
                prompt_ids=ids,
                prompts=prompts,
                negative_prompts=negs,
                model=spec.name,
                family=spec.family,
                partition=part,
            )
            count += len(chunk)
    store.save_index()
    return count
