import json

import pytest

from ecad_ray.errors import UserError
from ecad_ray.prompts import from_texts, read_prompt_file, safe_id


def test_txt_skips_blank_lines_and_numbers_prompts(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a red circle\n\n  a blue square  \n")
    prompts = read_prompt_file(f)
    assert [(p.index, p.prompt_id, p.text) for p in prompts] == [(0, "0", "a red circle"), (1, "1", "a blue square")]


def test_json_list_of_objects_keeps_ids(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"id": "005695-0057", "prompt": "a vehicle"}, {"id": "x", "prompt": "y"}]))
    assert [(p.prompt_id, p.text) for p in read_prompt_file(f)] == [("005695-0057", "a vehicle"), ("x", "y")]


def test_json_mapping_and_nested_prompt(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"a": "first", "b": {"prompt": "second", "category": "c"}}))
    assert [(p.prompt_id, p.text) for p in read_prompt_file(f)] == [("a", "first"), ("b", "second")]


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ("", ".txt", "holds no prompts"),
        ("\n\n", ".txt", "holds no prompts"),
        ("{not json", ".json", "not valid JSON"),
        ('[{"id": 1}]', ".json", "has no prompt text"),
        ('["a", "b", "a"]', ".json", None),
        ('{"a": "x", "b": ""}', ".json", "has no prompt text"),
        ('"just a string"', ".json", "expected a JSON list or object"),
    ],
)
def test_bad_prompt_files_name_the_file(tmp_path, content, suffix, message):
    f = tmp_path / f"p{suffix}"
    f.write_text(content)
    if message is None:  # duplicate texts are fine: ids are positions
        assert len(read_prompt_file(f)) == 3
        return
    with pytest.raises(UserError, match=message) as err:
        read_prompt_file(f)
    assert str(f) in str(err.value)


def test_duplicate_ids_refused(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    with pytest.raises(UserError, match="'a' appears more than once"):
        read_prompt_file(f)


def test_missing_file_and_empty_cli_prompt(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_prompt_file(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="empty prompt"):
        from_texts(["ok", "  "])


def test_safe_id_strips_path_separators():
    assert "/" not in safe_id("a/b c")
