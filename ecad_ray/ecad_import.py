"""Import ECAD's per-prompt embedding files into an ecad-ray embeddings store.

What ECAD's public code (github AniAggarwal/ecad) writes, one `torch.save`d dict per prompt:
- PixArt (`ecad/image_generators/pixart_image_generator.py`): exactly the four tensors
  `prompt_embeds` [L, 4096] float32, `prompt_attention_mask` [L] int64,
  `negative_prompt_embeds` [L, 4096], `negative_prompt_attention_mask` [L] (the embedding of
  ""), with no batch dimension (L = 120 for PixArt-α, 300 for Σ) and no prompt text.
- FLUX (`ecad/image_generators/flux_image_generator.py`): `prompt_embeds` [512, 4096] and
  `pooled_prompt_embeds` [768], bfloat16, plus `text_ids: None`.
- File names (`ecad/benchmark/generate_*embeddings*.py`): text prompt sets
  `{i:03d}__prompt_seed:{s:03}.pt`, JSON (ImageReward) `{i:03}__prompt_id:{id}__prompt_seed:{s:03}.pt`,
  PartiPrompts `{i:04}__prompt_seed:{s:03}.pt`, MJHQ `<category>/<image id>.pt`, COCO
  `megabatch_<i>/<i*3000 + line>.pt` for 10 megabatches of 3000 lines.

Since the files hold no text, the text is recovered from the prompt file they were made from
(`prompts` + `dataset`, read by `ecad_ray.prompt_sources`, whose ids follow ECAD's naming);
without one, a file must carry its own `"prompt"` string or the import refuses. Files are
read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects; the
folder a file sits in becomes its partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError
from ecad_ray.models.families import generation_family
from ecad_ray.models.registry import resolve_model
from ecad_ray.prompt_sources import COCO_MEGABATCH, DATASETS, PromptSource, coco_line, iter_prompts

_PROMPT_ID = re.compile(r"__prompt_id:([^_]+(?:_[^_]+)*?)(?:__|$)")
_NUMBERED = ("file", "drawbench", "parti")  # ECAD names these by the prompt's 0-based position
_NAME_FORMS = {
    "coco": "megabatch_<i>/<number>.pt, e.g. megabatch_1/6000.pt",
    "mjhq": "<category>/<image id>.pt",
    "imagereward": "NNN__prompt_id:<id>__prompt_seed:SSS.pt",
    "file": "NNN__prompt_seed:SSS.pt",
    "drawbench": "NNN__prompt_seed:SSS.pt",
    "parti": "NNNN__prompt_seed:SSS.pt",
}


@dataclass(frozen=True)
class _Entry:
    """One `.pt` file to import: where it goes and which prompt it is."""

    path: Path
    partition: str  # its folder under SRC ("" at the top)
    prompt_id: str
    prompt: str | None  # the text from the prompt file; None = take the file's own "prompt"


def prompt_id_from_name(stem: str) -> str:
    """`007__prompt_id:abc__prompt_seed:000` -> `abc`; otherwise the leading index or the stem."""
    match = _PROMPT_ID.search(stem)
    if match:
        return match.group(1)
    return stem.split("__", 1)[0]


def ecad_key(stem: str, dataset: str) -> str | None:
    """The key ECAD's file name gives a prompt in `dataset`'s prompt file; None if it has none.

    COCO: the number itself; MJHQ: the image id; ImageReward: the `prompt_id:` part; the
    line/row-numbered sets: the leading index, without its zero padding."""
    if dataset == "coco":
        return str(int(stem)) if stem.isdigit() else None
    if dataset == "mjhq":
        return stem
    if dataset == "imagereward":
        match = _PROMPT_ID.search(stem)
        return match.group(1) if match else None
    head = stem.split("__", 1)[0]
    return str(int(head)) if head.isdigit() and "__prompt_seed:" in stem else None


def _prompt_table(prompts: Path, dataset: str) -> dict[str, str]:
    """Map each prompt's ECAD key to its text, read from `prompts` as `dataset`."""
    if not Path(prompts).is_file():
        raise UserError(f"--prompts {prompts}: no such file")
    try:
        rows = iter_prompts(PromptSource(dataset, Path(prompts)))
        if dataset in _NUMBERED:
            return {str(int(r["prompt_id"])): r["prompt"] for r in rows}
        return {r["prompt_id"]: r["prompt"] for r in rows}
    except UserError as err:  # the readers name the file as `embed` calls it
        raise UserError(str(err).replace("--file-path", "--prompts", 1)) from err


def _check_options(prompts: Path | None, dataset: str | None) -> None:
    """`prompts` and `dataset` come together: one names the file, the other how ECAD numbered it."""
    if prompts is not None and dataset is None:
        choices = "|".join(DATASETS)
        raise UserError(f"--prompts {prompts}: also give --dataset ({choices}) to say how ECAD named the files")
    if dataset is not None and prompts is None:
        raise UserError(f"--dataset {dataset}: also give --prompts FILE, the prompt file the embeddings were made from")
    if dataset is not None and dataset not in DATASETS:
        raise UserError(f"--dataset {dataset}: choose one of {', '.join(DATASETS)}")


def _sort_key(path: Path) -> tuple:
    """Folder, then numbers in numeric order (ECAD's COCO `9.pt` before `10.pt`), then name."""
    stem = path.stem
    return (str(path.parent), not stem.isdigit(), int(stem) if stem.isdigit() else 0, path.name)


def _hint(dataset: str, key: str) -> str:
    """Why a name may be missing from the prompt file: a number ECAD never writes, or another file."""
    if dataset == "coco" and coco_line(int(key)) is None:
        step, last = 2 * COCO_MEGABATCH, COCO_MEGABATCH - 1
        return f"ECAD never writes it (megabatch_i holds {step}*i ... {step}*i+{last})"
    return "give the prompt file these embeddings were made from"


def _plan(src: Path, files: list[Path], prompts: Path | None, dataset: str | None) -> list[_Entry]:
    """Name every file's partition, id and text before any tensor is read or shard written."""
    table = _prompt_table(prompts, dataset) if prompts is not None else None
    entries = []
    for path in files:
        part = str(path.parent.relative_to(src)) if path.parent != src else ""
        text = None
        if table is not None:
            key = ecad_key(path.stem, dataset)
            if key is None:
                expected = _NAME_FORMS[dataset]
                raise UserError(f"{path}: not an ECAD {dataset} file name (expected {expected}); check --dataset")
            if key not in table:
                hint = _hint(dataset, key)
                raise UserError(f"{path}: ECAD {dataset} prompt {key!r} is not in --prompts {prompts}; {hint}")
            text = table[key]
        entries.append(_Entry(path, part, prompt_id_from_name(path.stem), text))
    return entries


def _load(path: Path) -> dict:
    """One ECAD file, weights-only (no arbitrary pickles), as a dict."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises several types for bad pickles)
        raise UserError(f"{path}: not a weights-only torch file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of embeddings, found {type(data).__name__}")
    return data


def _prompt_text(entry: _Entry, data: dict) -> str:
    """The entry's prompt text: from the prompt file, else the file's own `"prompt"`, else refuse.

    Never the file's number or id: `generate` finds stored embeddings by their text."""
    own = data.get("prompt")
    if entry.prompt is not None:
        if isinstance(own, str) and own.strip() != entry.prompt:
            raise UserError(f"{entry.path}: holds prompt {own.strip()!r} but --prompts gives {entry.prompt!r}")
        return entry.prompt
    if isinstance(own, str):
        return own
    raise UserError(
        f"{entry.path}: no prompt text in the file (ECAD saves only the embedding tensors); "
        f"pass --prompts FILE --dataset {'|'.join(DATASETS)} naming the prompt file they were made from"
    )


def _tensors(path: Path, data: dict, keys: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """The family's tensors of one file, one prompt each (a leading batch dimension of 1 is dropped)."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)} needed for {what}")
    out = {}
    for key in keys:
        value = data[key]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is {type(value).__name__}, not a tensor")
        out[key] = value[0] if value.dim() > 1 and value.shape[0] == 1 else value
    return out


def _stack(rows: list[dict[str, torch.Tensor]], keys: tuple[str, ...], where: str) -> dict[str, torch.Tensor]:
    """Stack one shard's per-prompt tensors; they must agree in shape."""
    stacked = {}
    for key in keys:
        shapes = {tuple(r[key].shape) for r in rows}
        if len(shapes) > 1:
            raise UserError(f"{where}: {key} has differing shapes {sorted(shapes)}")
        stacked[key] = torch.stack([r[key] for r in rows])
    return stacked


def import_ecad_embeddings(
    src: str | Path,
    dst: str | Path,
    model: str,
    shard_size: int = 256,
    prompts: str | Path | None = None,
    dataset: str | None = None,
) -> int:
    """Convert every `.pt` under `src` into shards under `dst`; returns the number of prompts.

    `prompts` + `dataset`: the prompt file the embeddings were made from and its format (see
    `ecad_ray.prompt_sources.DATASETS`); each file's ECAD name is mapped back to its text
    there. Without them each file must hold a `"prompt"` string (ECAD's never do)."""
    src, dst = Path(src), Path(dst)
    prompts = Path(prompts) if prompts is not None else None
    _check_options(prompts, dataset)
    model_spec = resolve_model(model)
    family = generation_family(model_spec.family)
    if not src.is_dir():
        raise UserError(f"SRC {src}: no such folder")
    files = sorted(src.rglob("*.pt"), key=_sort_key)
    if not files:
        raise UserError(f"SRC {src}: no .pt embedding files found")
    groups: dict[str, list[_Entry]] = {}
    for entry in _plan(src, files, prompts, dataset):
        groups.setdefault(entry.partition, []).append(entry)
    store = EmbeddingStore(dst)
    what = f"{model_spec.family} model {model_spec.name}"
    count = 0
    for part, entries in groups.items():
        for start in range(0, len(entries), shard_size):
            chunk = entries[start : start + shard_size]
            rows, texts, negs = [], [], []
            for entry in chunk:
                data = _load(entry.path)
                rows.append(_tensors(entry.path, data, family.embedding_keys, what))
                texts.append(_prompt_text(entry, data))
                negs.append(str(data.get("negative_prompt", "")))
            store.write_shard(
                _stack(rows, family.embedding_keys, f"{src}/{part}"),
                prompt_ids=[e.prompt_id for e in chunk],
                prompts=texts,
                negative_prompts=negs,
                model=model_spec.name,
                family=model_spec.family,
                partition=part,
            )
            count += len(chunk)
    store.save_index()
    return count
