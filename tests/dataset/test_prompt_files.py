"""Prompt files: nameonly's layout exactly, the static strategies' determinism, resume, bad files."""

import json
import re

import pytest

from ecad_ray.dataset.classes import load_class_set
from ecad_ray.dataset.prompts import (
    TEMPLATES, PromptJob, places, prompt_texts, read_prompt_file, write_static_prompts,
)
from ecad_ray.errors import UserError


def assert_nameonly_layout(data: dict) -> None:
    """{class: {"metaprompts": [{"index", "metaprompt", "prompts": [{"index", "content"}]}]}}, indexes 0.."""
    for entry in data.values():
        assert set(entry) == {"metaprompts"}
        for i, m in enumerate(entry["metaprompts"]):
            assert set(m) == {"index", "metaprompt", "prompts"} and m["index"] == i
            assert isinstance(m["metaprompt"], str)
            for j, p in enumerate(m["prompts"]):
                assert set(p) == {"index", "content"} and p["index"] == j and p["content"]


def test_template_prompts_fill_the_concept(tmp_path):
    out = tmp_path / "P.json"
    summary = write_static_prompts(load_class_set("domainnet").select("0:2"), PromptJob("template"), out)
    data = json.loads(out.read_text())
    assert summary.written == 2 and list(data) == ["aircraft_carrier", "airplane"]
    assert_nameonly_layout(data)
    first = data["aircraft_carrier"]["metaprompts"][0]
    assert first["metaprompt"] == TEMPLATES[0]  # the template it came from
    assert first["prompts"][0]["content"] == "a photo of the aircraft carrier."
    assert all("[concept]" not in t for t in prompt_texts(data["airplane"]))
    assert len(prompt_texts(data["airplane"])) == len(TEMPLATES)


def test_fake_f_is_class_hypernym_place(tmp_path):
    out = tmp_path / "P.json"
    write_static_prompts(load_class_set("pacs"), PromptJob("fake_f"), out)
    data = json.loads(out.read_text())
    assert_nameonly_layout(data)
    texts = prompt_texts(data["dog"])
    assert len(texts) == 200 == len(set(texts))  # nameonly's 200, one per place
    scenes = set(places())
    for text in texts:
        m = re.fullmatch(r"dog, domestic animal inside (.+)", text)
        assert m and m.group(1) in scenes
    assert {m["metaprompt"] for m in data["dog"]["metaprompts"]} == {"dummy"}


def test_places_are_200_distinct_scenes():
    assert len(places()) == 200 == len(set(places()))
    assert all("_" not in p for p in places())


def test_static_prompts_depend_on_seed_and_class_only(tmp_path):
    shapes = load_class_set("shapes")
    a, b, c, part = (tmp_path / f"{n}.json" for n in "abcd")
    write_static_prompts(shapes, PromptJob("fake_f", 5, seed=3), a)
    write_static_prompts(shapes, PromptJob("fake_f", 5, seed=3), b)
    write_static_prompts(shapes, PromptJob("fake_f", 5, seed=4), c)
    write_static_prompts(shapes.select("10:12"), PromptJob("fake_f", 5, seed=3), part)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    full, some = json.loads(a.read_text()), json.loads(part.read_text())
    assert some == {k: full[k] for k in shapes.classes[10:12]}


def test_rerun_keeps_classes_already_written(tmp_path):
    out = tmp_path / "P.json"
    pacs = load_class_set("pacs")
    write_static_prompts(pacs.select("0:3"), PromptJob("template", 2), out)
    data = json.loads(out.read_text())
    data["dog"]["metaprompts"][0]["prompts"][0]["content"] = "edited by hand"
    out.write_text(json.dumps(data))
    summary = write_static_prompts(pacs, PromptJob("template", 2), out)
    again = json.loads(out.read_text())
    assert (summary.written, summary.kept) == (4, 3)
    assert list(again) == list(pacs.classes)
    assert again["dog"]["metaprompts"][0]["prompts"][0]["content"] == "edited by hand"


@pytest.mark.parametrize("text,problem", [
    ("not json", "not a JSON prompt file"),
    ("[1, 2]", "got a JSON list"),
    ('{"dog": {"prompts": []}}', "class 'dog': expected"),
    ('{"dog": {"metaprompts": [{"index": 0, "metaprompt": "x", "prompts": [{"index": 0}]}]}}', "class 'dog': each prompt"),
    ('{"dog": {"metaprompts": []}}', "class 'dog': holds no prompt"),
])
def test_bad_prompt_files_are_one_line_naming_file_and_class(tmp_path, text, problem):
    f = tmp_path / "P.json"
    f.write_text(text)
    with pytest.raises(UserError, match=problem) as err:
        read_prompt_file(f)
    assert str(f) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_existing_file_is_not_overwritten(tmp_path):
    f = tmp_path / "P.json"
    f.write_text("{broken")
    with pytest.raises(UserError, match="not a JSON prompt file"):
        write_static_prompts(load_class_set("pacs"), PromptJob("template"), f)
    assert f.read_text() == "{broken"


@pytest.mark.parametrize("job,problem", [
    (dict(strategy="poems"), "--strategy 'poems'"),
    (dict(strategy="template", prompts_per_class=99), "has 20 distinct prompts"),
    (dict(strategy="fake_f", prompts_per_class=0), "at least 1"),
    (dict(strategy="synclr"), "give --llm-endpoint"),
])
def test_bad_jobs(job, problem):
    with pytest.raises(UserError, match=problem):
        PromptJob(**job)
