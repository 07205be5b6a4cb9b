"""`var eval` metrics on small image folders: prompts from metadata or file names, CLIP score
with a tiny CLIP built from a config, LPIPS backbone choice, and the speed columns."""

import json

import numpy as np
import pytest
from PIL import Image

import ecad_ray  # noqa: F401
from ecad_ray.errors import UserError
from ecad_ray.var.evaluation import EvalOptions, evaluate, find_images, load_prompts, summarize


def _img(path, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).random((16, 16, 3))
    arr = np.clip(base + noise * rng.standard_normal(base.shape), 0, 1)
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path):
    orig, fast = tmp_path / "orig", tmp_path / "fast"
    orig.mkdir(), fast.mkdir()
    for i, name in enumerate(["red_square", "blue_circle"]):
        _img(orig / f"{name}.png", i)
        _img(fast / f"{name}.png", i, noise=0.1 * (i + 1))
    return orig, fast


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("clip")
    words = ["[PAD]", "[UNK]", "red", "square", "blue", "circle", "a", "digit"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=16),
                     vision_config=dict(hidden_size=32, image_size=32, patch_size=8, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2), projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    return str(folder)


def test_prompts_from_names_and_metadata(folders):
    orig, _ = folders
    names = list(find_images(orig))
    assert load_prompts(orig, names, flat=True) == {"blue_circle": "blue circle", "red_square": "red square"}
    (orig / "meta_data.json").write_text(json.dumps({"red_square": {"prompt": "a red square"}}))
    assert load_prompts(orig, names, flat=True) == {"blue_circle": None, "red_square": "a red square"}


def test_metrics_order_and_clip(folders, tiny_clip, tmp_path):
    orig, fast = folders
    df = evaluate(orig, {"fast": fast}, EvalOptions(lpips_backbone="random", clip_model=tiny_clip))
    fast_rows = df[df["set"] == "fast"].set_index("item")
    # more noise -> lower PSNR / SSIM, higher LPIPS
    assert fast_rows.loc["red_square", "psnr"] > fast_rows.loc["blue_circle", "psnr"]
    assert fast_rows.loc["red_square", "ssim"] > fast_rows.loc["blue_circle", "ssim"]
    assert fast_rows.loc["red_square", "lpips"] < fast_rows.loc["blue_circle", "lpips"]
    assert df["clip_score"].notna().all() and (df["clip_score"] >= 0).all()
    assert set(df["set"]) == {"orig", "fast"}
    summary = summarize(df, {"orig": orig, "fast": fast}).set_index("set")
    assert summary.loc["fast", "images"] == 2 and summary.loc["fast", "sec_per_image"] is None


def test_clip_missing_is_one_line_or_skipped(folders):
    orig, fast = folders
    with pytest.raises(UserError, match="--clip-model /nowhere: CLIP weights not found"):
        evaluate(orig, {"fast": fast}, EvalOptions(lpips_backbone="random", clip_model="/nowhere"))
    lines = []
    df = evaluate(orig, {"fast": fast}, EvalOptions(lpips_backbone="random"), echo=lines.append)
    assert len(lines) == 1 and lines[0].startswith("CLIP score skipped")
    assert df["clip_score"].isna().all()


def test_pretrained_lpips_without_weights_errors_clearly(folders, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    orig, fast = folders
    with pytest.raises(UserError, match="--lpips-random-backbone"):
        evaluate(orig, {"fast": fast}, EvalOptions(lpips_backbone="pretrained", clip_model=""))


def test_unmatched_folders_error(folders, tmp_path):
    orig, _ = folders
    other = tmp_path / "other"
    other.mkdir()
    _img(other / "zzz.png", 0)
    with pytest.raises(UserError, match="no image names in common"):
        evaluate(orig, {"fast": other}, EvalOptions(lpips_backbone="random", clip_model=""))


def test_radial_profile_puts_low_frequencies_first():
    from ecad_ray.var.outputs import log_spectrum
    from ecad_ray.var.spectra import radial_profile

    smooth = np.linspace(0, 1, 16)[None, :].repeat(16, 0)
    checker = (np.indices((16, 16)).sum(0) % 2).astype(float)
    import torch

    prof_smooth = radial_profile(log_spectrum(torch.tensor(smooth)[None]))
    prof_checker = radial_profile(log_spectrum(torch.tensor(checker)[None]))
    assert len(prof_smooth) == 9
    assert prof_smooth[-1] < prof_smooth[0] and prof_checker[-1] > prof_smooth[-1]
