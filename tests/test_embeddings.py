"""The embeddings store, ECAD `.pt` import, and stage column checks."""

from __future__ import annotations

import sys

import pytest
import torch

from actors.generation import GeneratorStage
from actors.writer import ImageWriter
from ecad_ray.ecad_import import import_ecad_embeddings, prompt_id_from_name
from ecad_ray.embeddings import INDEX_NAME, EmbeddingStore, ShardReader
from ecad_ray.errors import UserError


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


def test_import_ecad_megabatches_keeps_partitions(tmp_path):
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
    with pytest.raises(ValueError, match="GeneratorStage: batch lacks column\\(s\\) seed"):
        stage.check({"shard": ["a"], "row": [0]})
    with pytest.raises(ValueError, match="ImageWriter: batch lacks column"):
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
