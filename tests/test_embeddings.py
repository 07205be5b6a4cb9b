"""The embeddings store, ECAD `.pt` import, and stage column checks.

ECAD-layout fixtures are written by test code that repeats, step by step, what ECAD's public
code (github AniAggarwal/ecad) does: `PixArtImageGenerator.encode_prompts` /
`encode_and_save_prompts` (`ecad/image_generators/pixart_image_generator.py`),
`FluxImageGenerator` (`ecad/image_generators/flux_image_generator.py`) and the naming loops of
`ecad/benchmark/generate_{coco,mjhq,}_embeddings.py` / `generate_embeddings_parti.py`, on the
package's tiny models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from actors.generation import GeneratorStage
from actors.writer import ImageWriter
from ecad_ray.ecad_import import import_ecad_embeddings, prompt_id_from_name
from ecad_ray.embeddings import INDEX_NAME, EmbeddingStore, ShardReader
from ecad_ray.errors import StageError, UserError


DATA = Path(__file__).parent / "data"
PIXART_KEYS = {"prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"}


@pytest.fixture(scope="module")
def demo_pipe():
    """The demo PixArt-α pipeline (tiny T5, weights shipped in the package), built once."""
    from ecad_ray.models.demo import build_pipeline

    return build_pipeline()


@torch.no_grad()
def save_like_ecad_pixart(pipe, name_to_prompt: dict[str, str], folder: Path) -> dict[str, dict]:
    """ECAD's PixArt writer: encode without CFG, negatives = the "" embedding repeated, then one
    `torch.save` per prompt of the four cloned rows (no batch dimension, no prompt text)."""
    folder.mkdir(parents=True, exist_ok=True)
    names, prompts = list(name_to_prompt), list(name_to_prompt.values())
    embeds, mask, neg, neg_mask = pipe.encode_prompt(prompts, negative_prompt="", do_classifier_free_guidance=False)
    assert neg is None and neg_mask is None  # why ECAD encodes "" separately
    _, _, neg, neg_mask = pipe.encode_prompt(prompt="", negative_prompt="")
    neg, neg_mask = neg.repeat(len(prompts), 1, 1), neg_mask.repeat(len(prompts), 1)
    saved = {}
    for name, rows in zip(names, zip(embeds, mask, neg, neg_mask)):
        record = {
            "prompt_embeds": rows[0].clone(),
            "prompt_attention_mask": rows[1].clone(),
            "negative_prompt_embeds": rows[2].clone(),
            "negative_prompt_attention_mask": rows[3].clone(),
        }
        torch.save(record, folder / f"{name}.pt")
        saved[name] = record
    return saved


@torch.no_grad()
def save_like_ecad_flux(pipe, name_to_prompt: dict[str, str], folder: Path) -> dict[str, dict]:
    """ECAD's FLUX writer: bf16 encoders, `prompt_embeds` + `pooled_prompt_embeds` rows and
    `text_ids: None` (its `include_text_ids` defaults to False)."""
    folder.mkdir(parents=True, exist_ok=True)
    embeds, pooled, _text_ids = pipe.encode_prompt(prompt=list(name_to_prompt.values()), prompt_2=None,
                                                   num_images_per_prompt=1)
    saved = {}
    for name, e, p in zip(name_to_prompt, embeds.bfloat16(), pooled.bfloat16()):
        record = {"prompt_embeds": e.clone(), "pooled_prompt_embeds": p.clone(), "text_ids": None}
        torch.save(record, folder / f"{name}.pt")
        saved[name] = record
    return saved


def ecad_coco_names(lines: list[str], wanted: set[int]) -> dict[str, dict[str, str]]:
    """ECAD's `read_coco_prompts` loop, kept to the `wanted` line numbers:
    megabatch i -> {i*3000 + j: line j for j in range(i*3000, i*3000 + 3000)}, for i in 0..9."""
    folders: dict[str, dict[str, str]] = {}
    for i in range(10):
        for j in range(i * 3000, i * 3000 + 3000):
            if j in wanted:
                folders.setdefault(f"megabatch_{i}", {})[str(i * 3000 + j)] = lines[j].strip()
    return folders


def coco_file(tmp_path: Path) -> tuple[Path, list[str]]:
    """A 30,003-line caption file, the length of ECAD's `COCO_caption_prompts_30k.txt`."""
    base = (DATA / "coco_captions_sample.txt").read_text().splitlines()
    lines = [f"{base[j % len(base)]} #{j}" for j in range(30003)]
    path = tmp_path / "COCO_caption_prompts_30k.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def random_pixart_record(seed: int, seq: int = 120, dim: int = 32) -> dict:
    """The four tensors of an ECAD PixArt file, in its shapes and dtypes, with random values."""
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(seq, dim, generator=g),
        "prompt_attention_mask": torch.ones(seq, dtype=torch.long),
        "negative_prompt_embeds": torch.randn(seq, dim, generator=g),
        "negative_prompt_attention_mask": torch.ones(seq, dtype=torch.long),
    }


def stored(store_dir: Path, model: str) -> dict[str, dict]:
    """Prompt text -> {prompt_id, partition, tensors} for every record `model` has in a store."""
    store = EmbeddingStore(store_dir)
    reader = ShardReader(store_dir)
    out = {}
    for row in store.index().to_pylist():
        if row["model"] == model:
            tensors = reader.gather([store.lookup(model)[row["prompt"]]])
            out[row["prompt"]] = {"id": row["prompt_id"], "partition": row["partition"],
                                  "tensors": {k: v[0] for k, v in tensors.items()}}
    return out


def pixart_record(prompt: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt": prompt,
        "prompt_embeds": torch.randn(1, 16, 64, generator=g),
        "prompt_attention_mask": torch.ones(1, 16, dtype=torch.long),
        "negative_prompt_embeds": torch.randn(1, 16, 64, generator=g),
        "negative_prompt_attention_mask": torch.ones(1, 16, dtype=torch.long),
    }


def test_store_round_trip_and_index_rebuild(tmp_path):
    store = EmbeddingStore(tmp_path)
    a = {"prompt_embeds": torch.arange(6.0).reshape(2, 3)}
    shard = store.write_shard(a, prompt_ids=["p0", "p1"], prompts=["x", "y"], negative_prompts=["", ""],
                              model="demo", family="pixart", partition="megabatch_0")
    assert shard.startswith("megabatch_0/")
    index = store.save_index()
    assert index.column("prompt_id").to_pylist() == ["p0", "p1"]
    assert index.column("partition").to_pylist() == ["megabatch_0", "megabatch_0"]
    # a second shard written later makes the saved index stale: it is rebuilt from headers
    store.write_shard({"prompt_embeds": torch.ones(1, 3)}, prompt_ids=["p2"], prompts=["z"],
                      negative_prompts=[""], model="demo", family="pixart")
    assert store.index().num_rows == 3
    refs = store.lookup("demo")
    got = ShardReader(tmp_path).gather([refs["y"], refs["x"]])
    assert torch.equal(got["prompt_embeds"], torch.tensor([[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]))
    assert store.lookup("other") == {}


def test_interrupted_shard_write_is_ignored(tmp_path):
    store = EmbeddingStore(tmp_path)
    (tmp_path / ".shard-abc.safetensors.tmp").write_bytes(b"partial")
    assert store.shard_paths() == [] and store.index().num_rows == 0


def test_prompt_id_from_ecad_names():
    assert prompt_id_from_name("007__prompt_id:005695-0057__prompt_seed:000") == "005695-0057"
    assert prompt_id_from_name("012__prompt_seed:003") == "012"
    assert prompt_id_from_name("some_id") == "some_id"


def test_import_files_that_carry_their_own_prompt_keep_partitions(tmp_path):
    """Not ECAD's layout (it saves no text and no batch dimension), but other writers' files."""
    src = tmp_path / "ecad"
    for mb in range(2):
        (src / f"megabatch_{mb}").mkdir(parents=True)
        for i in range(3):
            rec = pixart_record(f"prompt {mb}-{i}", 10 * mb + i)
            torch.save(rec, src / f"megabatch_{mb}" / f"{i:03d}__prompt_seed:{i:03d}.pt")
    n = import_ecad_embeddings(src, tmp_path / "store", "demo", shard_size=2)
    assert n == 6
    store = EmbeddingStore(tmp_path / "store")
    index = store.index()
    assert (tmp_path / "store" / INDEX_NAME).is_file()
    assert sorted(set(index.column("partition").to_pylist())) == ["megabatch_0", "megabatch_1"]
    assert set(index.column("model").to_pylist()) == {"demo"}
    ref = store.lookup("demo")["prompt 1-2"]
    got = ShardReader(tmp_path / "store").gather([ref])
    assert torch.equal(got["prompt_embeds"][0], pixart_record("", 12)["prompt_embeds"][0])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_import_refuses_arbitrary_pickles(tmp_path):
    src = tmp_path / "ecad"
    src.mkdir()
    torch.save({"prompt_embeds": Evil()}, src / "000__prompt_seed:000.pt")
    with pytest.raises(UserError, match="not a weights-only torch file"):
        import_ecad_embeddings(src, tmp_path / "store", "demo")
    assert not (tmp_path / "store").exists()


def test_import_names_missing_keys(tmp_path):
    src = tmp_path / "ecad"
    src.mkdir()
    torch.save({"prompt_embeds": torch.zeros(1, 4, 8)}, src / "000__prompt_seed:000.pt")
    with pytest.raises(UserError, match="lacks prompt_attention_mask"):
        import_ecad_embeddings(src, tmp_path / "store", "demo")


def test_stage_names_itself_when_a_column_is_missing(tmp_path):
    stage = GeneratorStage.__new__(GeneratorStage)  # column check needs no model
    with pytest.raises(ValueError, match="batch lacks column\\(s\\) seed"):
        stage.check({"shard": ["a"], "row": [0]})
    with pytest.raises(StageError, match="^write: prompt_id '0': ValueError: batch lacks column"):
        ImageWriter(str(tmp_path), {})({"prompt_id": ["0"]})


def test_cli_import_command(tmp_path, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    src = tmp_path / "ecad" / "animals"
    src.mkdir(parents=True)
    torch.save(pixart_record("a cat", 0), src / "cat_01.pt")
    monkeypatch.setattr(sys, "argv", ["ecad-ray", "embeddings", "import", str(tmp_path / "ecad"),
                                      str(tmp_path / "store"), "--model", "demo"])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code in (0, None)
    assert "imported 1 prompt(s)" in capsys.readouterr().out
    assert EmbeddingStore(tmp_path / "store").index().column("partition").to_pylist() == ["animals"]


# -- ECAD's real layout ----------------------------------------------------------------------


def test_coco_import_recovers_each_caption_from_ecads_numbering(tmp_path, demo_pipe):
    coco, lines = coco_file(tmp_path)
    wanted = {0, 1, 2999, 3000, 3001, 29999}
    src = tmp_path / "ecad" / "coco"
    saved = {}
    for folder, names in ecad_coco_names(lines, wanted).items():
        saved.update(save_like_ecad_pixart(demo_pipe, names, src / folder))
    assert sorted(p.name for p in (src / "megabatch_1").iterdir()) == ["6000.pt", "6001.pt"]
    assert [p.name for p in (src / "megabatch_9").iterdir()] == ["56999.pt"]
    on_disk = torch.load(src / "megabatch_1" / "6000.pt", weights_only=True)
    assert set(on_disk) == PIXART_KEYS  # only the four tensors: no text, no batch dimension
    assert on_disk["prompt_embeds"].shape == (120, 128) and on_disk["prompt_embeds"].dtype == torch.float32
    assert on_disk["prompt_attention_mask"].shape == (120,) and on_disk["prompt_attention_mask"].dtype == torch.long

    n = import_ecad_embeddings(src, tmp_path / "store", "demo", prompts=coco, dataset="coco")
    assert n == 6
    got = stored(tmp_path / "store", "demo")
    expect = {lines[j]: (str(j // 3000 * 3000 + j), f"megabatch_{j // 3000}") for j in wanted}
    assert {text: (r["id"], r["partition"]) for text, r in got.items()} == expect
    for text, (number, _) in expect.items():
        for key in PIXART_KEYS:
            assert torch.equal(got[text]["tensors"][key], saved[number][key])
    # `embed` names the same captions the same way, so the two stores agree
    from ecad_ray.prompt_sources import PromptSource, iter_prompts

    rows = {r["prompt"]: (r["prompt_id"], r["partition"]) for r in iter_prompts(PromptSource("coco", coco))}
    assert {text: rows[text] for text in expect} == expect


def test_imported_ecad_embeddings_draw_with_the_demo_model(tmp_path, demo_pipe):
    from ecad_ray.config import GenerateConfig, ImageSettings
    from ecad_ray.engine import ImageGenerator, TextEncoder
    from ecad_ray.models.registry import resolve_model

    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n")
    save_like_ecad_pixart(demo_pipe, {"000__prompt_seed:000": "a red circle"}, tmp_path / "ecad")
    import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", prompts=path, dataset="file")
    store = EmbeddingStore(tmp_path / "store")
    emb = ShardReader(tmp_path / "store").gather([store.lookup("demo")["a red circle"]])
    model_spec = resolve_model("demo")
    gen = ImageGenerator(model_spec, ImageSettings.resolve(GenerateConfig(steps=2), model_spec), "cpu")
    own = TextEncoder(model_spec, "cpu")(["a red circle"], [""])
    import numpy as np

    ecad_image = gen(emb, [1])
    assert ecad_image.shape == (1, 32, 32, 3)
    # ECAD pads to diffusers' default 120 tokens, ecad-ray's demo to 16: same picture either way
    assert np.abs(ecad_image.astype(int) - gen(own, [1]).astype(int)).max() <= 2


def test_real_layout_without_a_prompt_file_is_refused_in_one_line(tmp_path):
    src = tmp_path / "ecad" / "megabatch_1"
    src.mkdir(parents=True)
    torch.save(random_pixart_record(0), src / "6000.pt")
    with pytest.raises(UserError) as err:
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo")
    message = str(err.value)
    assert "6000.pt: no prompt text in the file" in message and "--prompts FILE --dataset" in message
    assert "\n" not in message
    assert not (tmp_path / "store").exists()


def test_names_the_prompt_file_cannot_explain_are_refused_before_writing(tmp_path):
    coco, _ = coco_file(tmp_path)
    src = tmp_path / "ecad" / "megabatch_0"
    src.mkdir(parents=True)
    torch.save(random_pixart_record(0), src / "0.pt")
    torch.save(random_pixart_record(1), src / "3000.pt")  # in the gap: ECAD never writes 3000-5999
    with pytest.raises(UserError, match=r"3000.pt: ECAD coco prompt '3000' is not in --prompts .*COCO_caption.*; "
                                        r"ECAD never writes it \(megabatch_i holds 6000\*i \.\.\. 6000\*i\+2999\)"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", prompts=coco, dataset="coco")
    (src / "3000.pt").rename(src / "caption.pt")
    with pytest.raises(UserError, match=r"caption.pt: not an ECAD coco file name \(expected megabatch_<i>/<number>.pt"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", prompts=coco, dataset="coco")
    assert not (tmp_path / "store").exists()
    with pytest.raises(UserError, match="--prompts .*: also give --dataset"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", prompts=coco)
    with pytest.raises(UserError, match="--dataset coco: also give --prompts FILE"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", dataset="coco")
    with pytest.raises(UserError, match="--prompts .*missing.txt: no such file"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "demo", prompts=tmp_path / "missing.txt",
                               dataset="coco")


def test_mjhq_import_reads_meta_data_json_by_category_and_id(tmp_path, demo_pipe):
    meta = json.loads((DATA / "mjhq_sample.json").read_text())
    src = tmp_path / "ecad"
    by_category: dict[str, dict[str, str]] = {}
    for image_id, info in meta.items():  # ECAD's read_mjhq_prompts: category -> {id: prompt}
        by_category.setdefault(info["category"], {})[image_id] = info["prompt"]
    saved = {}
    for category, names in by_category.items():
        saved.update(save_like_ecad_pixart(demo_pipe, names, src / category))
    n = import_ecad_embeddings(src, tmp_path / "store", "demo", prompts=DATA / "mjhq_sample.json", dataset="mjhq")
    assert n == len(meta)
    got = stored(tmp_path / "store", "demo")
    assert {r["id"]: (text, r["partition"]) for text, r in got.items()} == {
        i: (info["prompt"].strip(), info["category"]) for i, info in meta.items()
    }
    some_id, info = next(iter(meta.items()))
    assert torch.equal(got[info["prompt"].strip()]["tensors"]["prompt_embeds"], saved[some_id]["prompt_embeds"])


def test_flux_import_in_ecads_layout_keeps_bf16_and_finds_imagereward_ids(tmp_path):
    from tiny_models import tiny_flux_pipeline

    items = json.loads((DATA / "imagereward_sample.json").read_text())
    names = {f"{i:03}__prompt_id:{item['id']}__prompt_seed:{0:03}": item["prompt"] for i, item in enumerate(items)}
    saved = save_like_ecad_flux(tiny_flux_pipeline(tmp_path / "tok"), names, tmp_path / "ecad")
    on_disk = torch.load(next((tmp_path / "ecad").glob("000__*.pt")), weights_only=True)
    assert set(on_disk) == {"prompt_embeds", "pooled_prompt_embeds", "text_ids"} and on_disk["text_ids"] is None
    assert on_disk["prompt_embeds"].shape == (512, 32) and on_disk["pooled_prompt_embeds"].shape == (32,)
    n = import_ecad_embeddings(tmp_path / "ecad", tmp_path / "store", "flux-dev",
                               prompts=DATA / "imagereward_sample.json", dataset="imagereward")
    assert n == len(items)
    got = stored(tmp_path / "store", "flux-dev")
    assert {r["id"]: text for text, r in got.items()} == {item["id"]: item["prompt"].strip() for item in items}
    name, record = next(iter(saved.items()))
    tensors = got[names[name].strip()]["tensors"]
    assert set(tensors) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert tensors["prompt_embeds"].dtype == torch.bfloat16
    assert torch.equal(tensors["prompt_embeds"], record["prompt_embeds"])
    assert torch.equal(tensors["pooled_prompt_embeds"], record["pooled_prompt_embeds"])
    with pytest.raises(UserError, match="lacks prompt_attention_mask, negative_prompt_embeds"):
        import_ecad_embeddings(tmp_path / "ecad", tmp_path / "pixart-store", "demo",
                               prompts=DATA / "imagereward_sample.json", dataset="imagereward")


@pytest.mark.parametrize(
    ("dataset", "prompt_file", "name_format"),
    [
        ("drawbench", "drawbench_sample.txt", "{i:03d}__prompt_seed:{s:03}"),  # generate_embeddings.py, .txt
        ("parti", "parti_sample.tsv", "{i:04}__prompt_seed:{s:03}"),  # generate_embeddings_parti.py
    ],
)
def test_numbered_prompt_sets_map_the_leading_index_to_the_line(tmp_path, dataset, prompt_file, name_format):
    from ecad_ray.prompt_sources import PromptSource, iter_prompts

    texts = [r["prompt"] for r in iter_prompts(PromptSource(dataset, DATA / prompt_file))]
    src = tmp_path / "ecad"
    src.mkdir()
    for i in (0, len(texts) - 1):
        torch.save(random_pixart_record(i), src / f"{name_format.format(i=i, s=0)}.pt")
    import_ecad_embeddings(src, tmp_path / "store", "demo", prompts=DATA / prompt_file, dataset=dataset)
    got = stored(tmp_path / "store", "demo")
    assert {text: r["id"] for text, r in got.items()} == {
        texts[0]: name_format.format(i=0, s=0).split("__")[0],
        texts[-1]: name_format.format(i=len(texts) - 1, s=0).split("__")[0],
    }


def test_cli_import_with_prompt_file_and_its_one_line_refusal(tmp_path, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    coco, lines = coco_file(tmp_path)
    src = tmp_path / "ecad" / "megabatch_1"
    src.mkdir(parents=True)
    torch.save(random_pixart_record(0), src / "6000.pt")
    base = ["ecad-ray", "embeddings", "import", str(tmp_path / "ecad"), str(tmp_path / "store"), "--model", "demo"]
    monkeypatch.setattr(sys, "argv", base)
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "6000.pt: no prompt text" in err[0]
    monkeypatch.setattr(sys, "argv", [*base, "--prompts", str(coco), "--dataset", "coco"])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code in (0, None)
    assert "imported 1 prompt(s)" in capsys.readouterr().out
    assert stored(tmp_path / "store", "demo")[lines[3000]]["id"] == "6000"
