"""The procedural captioned shapes data: deterministic, split by caption, drawn as captioned."""

import numpy as np
import pytest

from ecad_ray.shapes import (
    COLOURS,
    heldout_captions,
    is_val_caption,
    make_dataset,
    parse_caption,
    render_captions,
    sample_scenes,
)


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = make_dataset(12, seed=3), make_dataset(12, seed=3), make_dataset(12, seed=4)
    assert a.images.shape == (12, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_train_and_val_captions_never_overlap():
    train = {s.caption for s in sample_scenes(400, seed=0, split="train")}
    val = {s.caption for s in sample_scenes(100, seed=0, split="val")}
    assert not train & val
    assert all(is_val_caption(c) for c in val) and not any(is_val_caption(c) for c in train)


def test_heldout_prompt_file_is_val_only_and_parses():
    lines = heldout_captions()
    assert len(lines) >= 32
    assert all(parse_caption(c) is not None and is_val_caption(c) for c in lines)


def test_parse_caption_reads_back_every_scene():
    for scene in sample_scenes(200, seed=1):
        spec = parse_caption(scene.caption)
        assert spec is not None, scene.caption
        assert [(o.colour, o.shape) for o in spec.objects] == [(o.colour, o.shape) for o in scene.objects]
        assert spec.relation == scene.relation
        assert spec.sizes == tuple(o.size if say else None for o, say in zip(scene.objects, scene.say_size))
        assert spec.background == (scene.background if scene.say_background else None)


@pytest.mark.parametrize("text", ["a red", "a red blob", "two red circles", "a red circle near a blue square", ""])
def test_parse_caption_rejects_other_text(text):
    assert parse_caption(text) is None


def _centroid(image, colour):
    """Mean (y, x) of pixels close to a colour."""
    dist = np.abs(image.astype(int) - np.array(colour)).sum(-1)
    ys, xs = np.nonzero(dist < 60)
    assert len(ys) > 5, "shape colour not found in image"
    return ys.mean(), xs.mean()


@pytest.mark.parametrize(
    "caption,axis,sign",
    [
        ("a red circle above a blue square", 0, -1),
        ("a red circle below a blue square", 0, 1),
        ("a red circle left of a blue square", 1, -1),
        ("a red circle right of a blue square", 1, 1),
    ],
)
def test_relations_are_drawn_where_the_caption_says(caption, axis, sign):
    data = render_captions([caption] * 5, seed=2)
    for image in data.images:
        red, blue = _centroid(image, COLOURS["red"]), _centroid(image, COLOURS["blue"])
        assert sign * (red[axis] - blue[axis]) > 4


def test_large_shapes_cover_more_pixels_than_small():
    small = render_captions(["a small green square"] * 6, seed=5).images
    large = render_captions(["a large green square"] * 6, seed=5).images

    def area(img):
        return (np.abs(img.astype(int) - np.array(COLOURS["green"])).sum(-1) < 60).sum()

    assert min(area(i) for i in large) > 2 * max(area(i) for i in small)
