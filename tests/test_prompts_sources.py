"""Prompt-set readers on small samples of the real files, and `ecad-ray embed` on the demo model."""

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecad_ray import prompt_sources as ps
from ecad_ray.errors import UserError

DATA = Path(__file__).parent / "data"


def read(dataset, name, **kw):
    return list(ps.iter_prompts(ps.PromptSource(dataset, DATA / name, **kw)))


def test_text_formats_keep_every_line_with_line_number_ids():
    lines = (DATA / "drawbench_sample.txt").read_text().splitlines()
    for dataset in ("drawbench", "file"):
        rows = read(dataset, "drawbench_sample.txt")
        assert [r["prompt"] for r in rows] == [line.strip() for line in lines]
        assert [r["prompt_id"] for r in rows] == [f"{i:06d}" for i in range(len(lines))]
        assert {r["partition"] for r in rows} == {""}


def test_blank_lines_are_skipped_but_ids_stay_line_numbers(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\n\n  \nfourth\n")
    rows = list(ps.iter_prompts(ps.PromptSource("file", path)))
    assert [(r["prompt_id"], r["prompt"]) for r in rows] == [("000000", "first"), ("000003", "fourth")]


def test_coco_is_partitioned_into_megabatches():
    rows = read("coco", "coco_captions_sample.txt", megabatch_size=10)
    assert len(rows) == 25
    sizes = {p: sum(r["partition"] == p for r in rows) for p in {r["partition"] for r in rows}}
    assert sizes == {"megabatch_0": 10, "megabatch_1": 10, "megabatch_2": 5}
    assert rows[0]["prompt"] == "A man about to return a serve with his tennis racket"
    # ECAD's numbering, scaled to the megabatch size: line j of megabatch i is i*size + j
    assert [r["prompt_id"] for r in rows[9:12]] == ["9", "20", "21"]
    assert rows[20]["prompt_id"] == "40"
    # default megabatch is ECAD's 3000 lines
    assert {r["partition"] for r in read("coco", "coco_captions_sample.txt")} == {"megabatch_0"}


def test_coco_follows_ecads_ten_megabatches_of_3000_and_its_numbering(tmp_path):
    """ECAD's generate_coco_embeddings.py: `for i in range(10): for j in range(i*3000, i*3000+3000):
    prompts[i][i*3000 + j] = line j`; its 30k file has 30,003 lines, the last 3 never embedded."""
    path = tmp_path / "COCO_caption_prompts_30k.txt"
    lines = [f"caption {j}" for j in range(30003)]
    path.write_text("\n".join(lines) + "\n")
    rows = list(ps.iter_prompts(ps.PromptSource("coco", path)))
    ecad = [(str(i * 3000 + j), lines[j], f"megabatch_{i}")
            for i in range(10) for j in range(i * 3000, i * 3000 + 3000)]
    assert [(r["prompt_id"], r["prompt"], r["partition"]) for r in rows] == ecad
    assert len(rows) == 30000 and rows[-1]["prompt"] == "caption 29999"
    first_of_1 = next(r for r in rows if r["partition"] == "megabatch_1")
    assert (first_of_1["prompt_id"], first_of_1["prompt"]) == ("6000", "caption 3000")  # ECAD's megabatch_1/6000.pt
    assert not {"caption 30000", "caption 30001", "caption 30002"} & {r["prompt"] for r in rows}


def test_coco_numbers_map_back_to_lines():
    assert [ps.coco_number(j) for j in (0, 2999, 3000, 29999)] == [0, 2999, 6000, 56999]
    assert [ps.coco_line(n) for n in (0, 2999, 6000, 6001, 56999)] == [0, 2999, 3000, 3001, 29999]
    assert [ps.coco_line(n) for n in (3000, 5999, 57000, 60000, -1)] == [None] * 5  # names ECAD never writes
    assert all(ps.coco_line(ps.coco_number(j)) == j for j in range(0, 30000, 7))


def test_imagereward_json_keeps_its_ids():
    items = json.loads((DATA / "imagereward_sample.json").read_text())
    rows = read("imagereward", "imagereward_sample.json")
    assert [(r["prompt_id"], r["prompt"]) for r in rows] == [(i["id"], i["prompt"].strip()) for i in items]


def test_mjhq_json_partitions_by_category():
    meta = json.loads((DATA / "mjhq_sample.json").read_text())
    rows = read("mjhq", "mjhq_sample.json")
    assert [r["prompt_id"] for r in rows] == list(meta)
    assert all(r["partition"] == meta[r["prompt_id"]]["category"] for r in rows)
    assert {r["partition"] for r in rows} == {"animals", "people", "landscape"}


def test_parti_tsv_partitions_by_folder_safe_category():
    with (DATA / "parti_sample.tsv").open() as f:
        records = list(csv.DictReader(f, delimiter="\t"))
    rows = read("parti", "parti_sample.tsv")
    assert [r["prompt"] for r in rows] == [rec["Prompt"] for rec in records]
    assert rows[0]["partition"] == "abstract"
    assert "world-knowledge" in {r["partition"] for r in rows}


def test_streaming_json_reader_matches_json_load_at_any_chunk_size(monkeypatch):
    items = json.loads((DATA / "imagereward_sample.json").read_text())
    meta = json.loads((DATA / "mjhq_sample.json").read_text())
    for chunk in (1, 3, 17, 1 << 16):
        monkeypatch.setattr(ps, "_CHUNK", chunk)
        assert list(ps.iter_json_items(DATA / "imagereward_sample.json")) == items
        assert dict(ps.iter_json_items(DATA / "mjhq_sample.json", mapping=True)) == meta


def test_json_numbers_split_across_chunks(tmp_path, monkeypatch):
    path = tmp_path / "n.json"
    path.write_text('[12345678, {"id": 1, "prompt": "x"}, 3.25e2]')
    monkeypatch.setattr(ps, "_CHUNK", 2)
    assert list(ps.iter_json_items(path)) == [12345678, {"id": 1, "prompt": "x"}, 325.0]


def test_limit_takes_the_first_prompts_and_seed_a_reproducible_sample():
    first = read("coco", "coco_captions_sample.txt", limit=5)
    assert [r["prompt_id"] for r in first] == [str(i) for i in range(5)]
    a = read("coco", "coco_captions_sample.txt", limit=5, seed=3)
    b = read("coco", "coco_captions_sample.txt", limit=5, seed=3)
    c = read("coco", "coco_captions_sample.txt", limit=5, seed=4)
    assert a == b and a != c and len(a) == 5
    ids = [r["prompt_id"] for r in a]
    assert ids == sorted(ids, key=int) and len(set(ids)) == 5  # file order, no repeats
    assert read("coco", "coco_captions_sample.txt", limit=100, seed=1) == read("coco", "coco_captions_sample.txt")


def test_readers_stream_instead_of_loading_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "tail_broken.json"
    good = ",".join(json.dumps({"id": str(i), "prompt": f"prompt {i}"}) for i in range(50))
    path.write_text("[" + good + ", {broken")
    monkeypatch.setattr(ps, "_CHUNK", 64)
    rows = ps.iter_prompts(ps.PromptSource("imagereward", path, limit=3))
    assert [r["prompt_id"] for r in rows] == ["0", "1", "2"]  # never reached the broken tail
    with pytest.raises(UserError, match="invalid JSON"):
        list(ps.iter_prompts(ps.PromptSource("imagereward", path)))


@pytest.mark.parametrize(
    ("dataset", "content", "message"),
    [
        ("imagereward", '{"id": 1}', "expected a list"),
        ("imagereward", '[{"prompt": "x"}]', "item 0"),
        ("mjhq", '{"a": {"prompt": "x"}}', "lacks 'prompt' or 'category'"),
        ("imagereward", '[{"id": 1, "prompt": "x"} {"id": 2}]', "expected ','"),
        ("parti", "text\tcat\n", "no 'Prompt' column"),
    ],
)
def test_malformed_files_raise_one_line_user_errors(tmp_path, dataset, content, message):
    path = tmp_path / "bad"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        list(ps.iter_prompts(ps.PromptSource(dataset, path)))


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--dataset"):
        ps.PromptSource("laion", tmp_path)
    with pytest.raises(UserError, match="--limit"):
        ps.PromptSource("file", tmp_path, limit=0)
    with pytest.raises(UserError, match="no such file"):
        ps.iter_prompts(ps.PromptSource("file", tmp_path / "missing.txt"))


def test_embed_fills_partitions_and_resumes(tmp_path):
    from ecad_ray.embeddings import EmbeddingStore
    from ecad_ray_cli.main import app

    store = tmp_path / "store"
    args = ["embed", "--dataset", "coco", "--file-path", str(DATA / "coco_captions_sample.txt"),
            "--output-dir", str(store), "--model", "demo", "--prompt-batch-size", "4",
            "--megabatch-size", "6", "--device", "cpu"]
    first = CliRunner().invoke(app, [*args, "--limit", "8"], catch_exceptions=False)
    assert "embedded 8 prompt(s), 0 already stored" in first.output
    assert sorted(p.name for p in store.iterdir() if p.is_dir()) == ["megabatch_0", "megabatch_1"]
    second = CliRunner().invoke(app, [*args, "--limit", "12"], catch_exceptions=False)
    assert "embedded 4 prompt(s), 8 already stored" in second.output
    index = EmbeddingStore(store).index().to_pylist()
    # ECAD's COCO numbering at megabatch size 6: lines 0-5 -> 0-5, lines 6-11 -> 12-17
    assert sorted((int(r["prompt_id"]) for r in index)) == [*range(6), *range(12, 18)]
    assert {r["model"] for r in index} == {"demo"}
    assert {r["partition"] for r in index if r["prompt_id"] == "13"} == {"megabatch_1"}
    # generate finds them by prompt text, as --input-embeddings does
    lines = (DATA / "coco_captions_sample.txt").read_text().splitlines()
    assert set(lines[:12]) <= set(EmbeddingStore(store).lookup("demo", ""))


def test_embed_bad_dataset_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    monkeypatch.setattr(sys, "argv", ["ecad-ray", "embed", "--dataset", "laion", "--file-path",
                                      str(DATA / "drawbench_sample.txt"), "--output-dir", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --dataset laion: choose one of file, drawbench, coco, imagereward, mjhq, parti"
    ]
