"""The judge: scoring logic (with a judge whose readings are fixed), and the shipped judge on real data."""

import numpy as np
import pytest
import torch
from torch import nn

from ecad_ray import judge as J
from ecad_ray.shapes import make_dataset, render_captions


class FixedJudge(nn.Module):
    """A stand-in judge that reads every image as the given class names."""

    def __init__(self, readings: list[dict[str, str]]):
        super().__init__()
        self.readings = readings

    def forward(self, x_NCHW):
        out = {}
        for head, classes in J.HEADS.items():
            logits = torch.zeros(len(self.readings), len(classes))
            for i, r in enumerate(self.readings):
                logits[i, classes.index(r[head])] = 1.0
            out[head] = logits
        return out


def _reading(layout, slot0, slot1=("none", "none", "none"), background="plain"):
    return {"layout": layout, "colour0": slot0[0], "shape0": slot0[1], "size0": slot0[2],
            "colour1": slot1[0], "shape1": slot1[1], "size1": slot1[2], "background": background}


def test_score_separates_what_from_where():
    captions = [
        "a small red circle above a blue square",  # drawn right
        "a small red circle above a blue square",  # drawn swapped: blue square on top
        "a red circle left of a blue square",  # right things, wrong axis
        "a green cross",  # wrong colour, right shape
    ]
    readings = [
        _reading("vertical", ("red", "circle", "small"), ("blue", "square", "large")),
        _reading("vertical", ("blue", "square", "large"), ("red", "circle", "large")),
        _reading("vertical", ("red", "circle", "small"), ("blue", "square", "small")),
        _reading("single", ("yellow", "cross", "small")),
    ]
    images = np.zeros((4, 32, 32, 3), np.uint8)
    fid = J.score(captions, images, FixedJudge(readings))
    assert fid.n_objects == 7 and fid.n_pairs == 3 and fid.n_sizes == 2
    assert fid.colour == pytest.approx(6 / 7)  # only the green cross is wrong
    assert fid.shape == 1.0
    assert fid.position == pytest.approx(1 / 3)  # swapped order and wrong axis both fail
    assert fid.size == pytest.approx(1 / 2)  # the swapped image drew a large red circle


def test_score_skips_prompts_outside_the_grammar():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    readings = [_reading("single", ("red", "circle", "small"))] * 2
    fid = J.score(["a photo of a cat", "a red circle"], images, FixedJudge(readings))
    assert fid.n_skipped == 1 and fid.n_images == 1 and fid.colour == 1.0


def test_missing_judge_weights_is_a_user_error(tmp_path):
    from ecad_ray.errors import UserError

    with pytest.raises(UserError, match="demo train"):
        J.load_judge(tmp_path / "nope.safetensors")


def test_shipped_judge_reads_held_out_real_images():
    data = make_dataset(300, seed=11, split="val")
    fid = J.score(data.captions, data.images)
    assert fid.colour > 0.95 and fid.shape > 0.9 and fid.position > 0.9


def test_features_match_the_clean_fid_extractor_and_separate_real_from_noise():
    real = render_captions(["a red circle above a blue square", "a large white cross"] * 40, seed=1).images
    feats = J.features(real)
    assert feats.shape == (80, J.JudgeConfig().feature_dim)
    as_clean_fid = J.clean_fid_extractor()(torch.as_tensor(real).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(as_clean_fid.numpy(), feats, rtol=1e-4, atol=1e-4)
    other_real = J.features(render_captions(["a red circle above a blue square", "a large white cross"] * 40, seed=2).images)
    noise = J.features(np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8))
    assert J.frechet_distance(feats, other_real) < 0.2 * J.frechet_distance(feats, noise)
