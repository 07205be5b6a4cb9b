"""Class sets: the shipped data (names, nameonly's base counts), sizes, ranges, and bad inputs."""

import json

import pytest

from ecad_ray.dataset.classes import CLASSSETS_DIR, GENERIC_HYPERNYM, load_class_set
from ecad_ray.errors import UserError

# (set, classes, sum of base counts): nameonly's count tables
SHIPPED = [("pacs", 7, 1333), ("cifar10", 10, 10_000), ("domainnet", 345, 50_273),
           ("imagenet", 1000, 200_000), ("imagenet_full", 1000, 997_939)]


@pytest.mark.parametrize("name,n,total", SHIPPED)
def test_shipped_sets_hold_nameonlys_counts(name, n, total):
    s = load_class_set(name)
    assert len(s.classes) == n and len(set(s.classes)) == n
    assert sum(s.base_counts) == total
    for extra in (s.descriptions, s.hypernyms):
        assert extra is None or len(extra) == n
    assert json.loads((CLASSSETS_DIR / f"{name}.json").read_text())["source"]  # says where the numbers came from


def test_pacs_and_domainnet_counts_per_class():
    pacs = load_class_set("pacs")
    assert dict(zip(pacs.classes, pacs.base_counts)) == {
        "horse": 159, "elephant": 161, "person": 345, "dog": 151, "guitar": 148, "giraffe": 145, "house": 224}
    dn = load_class_set("domainnet")
    counts = dict(zip(dn.classes, dn.base_counts))
    assert counts["aircraft_carrier"] == 150 and counts["angel"] == 21 and counts["bush"] == 21
    assert dn.classes[:3] == ("aircraft_carrier", "airplane", "alarm_clock")


def test_imagenet_classes_are_wnids_with_prompt_descriptions():
    s = load_class_set("imagenet")
    assert s.classes[0] == "n01440764" and list(s.classes) == sorted(s.classes)  # the standard order
    assert s.description("n01440764") == "tench, Tinca tinca"
    assert s.hypernym("n01440764") == "cyprinid"
    assert set(s.base_counts) == {200}
    assert max(load_class_set("imagenet_full").base_counts) == 1000


def test_images_per_class_rounds_as_nameonly():
    pacs = load_class_set("pacs")
    sizes = pacs.images_per_class(increase_ratio=1.15)
    assert sizes["dog"] == 173  # int(151 * 1.15) = int(173.649...)
    assert sum(sizes.values()) == 1529
    assert sum(load_class_set("imagenet").images_per_class().values()) == 229_000  # int(200 * 1.15) is 229
    assert set(pacs.images_per_class(images_per_class=5).values()) == {5}


@pytest.mark.parametrize("kwargs,text", [({"increase_ratio": 0}, "--increase-ratio"),
                                         ({"images_per_class": 0}, "--images-per-class")])
def test_bad_sizes_are_one_line(kwargs, text):
    with pytest.raises(UserError, match=text):
        load_class_set("pacs").images_per_class(**kwargs)


def test_a_set_without_counts_needs_images_per_class():
    with pytest.raises(UserError, match="--images-per-class"):
        load_class_set("shapes").images_per_class(increase_ratio=1.15)


@pytest.mark.parametrize("text,first,n", [("0:3", "aircraft_carrier", 3), (":2", "aircraft_carrier", 2),
                                          ("343:", "zebra", 2), ("340:9999", None, 5)])
def test_class_range_is_a_slice_and_keeps_every_column_aligned(text, first, n):
    full = load_class_set("domainnet")
    part = full.select(text)
    assert len(part.classes) == n
    if first:
        assert part.classes[0] == first
    for c in part.classes:
        i = full.classes.index(c)
        assert part.base_counts[part.classes.index(c)] == full.base_counts[i]
        assert part.hypernym(c) == full.hypernym(c)


@pytest.mark.parametrize("text", ["5:5", "9:12", "3:1"])
def test_empty_class_range_is_one_line(text):
    with pytest.raises(UserError, match=r"--class-range .* selects no class \(the set has 7 classes\)"):
        load_class_set("pacs").select(text)


@pytest.mark.parametrize("text", ["3", "a:b", "1:2:3"])
def test_malformed_class_range(text):
    with pytest.raises(UserError, match="expected START:END"):
        load_class_set("pacs").select(text)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(UserError) as err:
        load_class_set("coco")
    assert "'coco' is not a known class set" in str(err.value)
    assert "domainnet" in str(err.value) and "shapes" in str(err.value)
    assert "\n" not in str(err.value)


def test_exactly_one_source():
    with pytest.raises(UserError, match="exactly one"):
        load_class_set()
    with pytest.raises(UserError, match="exactly one"):
        load_class_set("pacs", "x.txt")


def test_classes_file(tmp_path):
    f = tmp_path / "birds.txt"
    f.write_text("# my classes\nblue_jay\n\nrobin\n")
    s = load_class_set(classes_file=f)
    assert s.name == "birds" and s.classes == ("blue_jay", "robin") and s.base_counts is None
    assert s.description("blue_jay") == "blue jay"  # as nameonly: "_" as spaces in prompts
    assert s.hypernym("robin") == GENERIC_HYPERNYM


@pytest.mark.parametrize("text,problem", [("", "holds no class name"), ("a\nb\na\n", "repeat: a"),
                                          ("ok\nx/y\n", "cannot hold '/'")])
def test_bad_classes_files(tmp_path, text, problem):
    f = tmp_path / "c.txt"
    f.write_text(text)
    with pytest.raises(UserError, match=problem):
        load_class_set(classes_file=f)
    with pytest.raises(UserError, match="no such file"):
        load_class_set(classes_file=tmp_path / "missing.txt")


def test_shapes_are_the_demos_classes():
    s = load_class_set("shapes")
    assert len(s.classes) == 24 and "red circle" in s.classes and s.hypernym("red circle") == "shape"
