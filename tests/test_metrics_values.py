"""Metric values on known inputs: identical images are perfect, a shifted image scores worse."""

import math
import warnings

import numpy as np
import pytest
import torch
from metrics_fakes import base_images, shifted, tiny_clip

from ecad_ray.errors import UserError
from ecad_ray.metrics import fid, pairwise
from ecad_ray.metrics.config import MetricsConfig


@pytest.fixture(scope="module")
def images():
    return base_images(8)


def test_psnr_is_infinite_for_identical_images_and_drops_with_a_shift(images):
    img = images[0]
    assert pairwise.psnr(img, img.copy()) == math.inf
    one_level = img.astype(np.int16)
    one_level[0, 0, 0] += 1 if img[0, 0, 0] < 255 else -1
    expected = 10 * math.log10(255**2 / (1 / img.size))  # a single pixel off by one
    assert pairwise.psnr(one_level.astype(np.uint8), img) == pytest.approx(expected)
    small, large = pairwise.psnr(shifted(img, 1), img), pairwise.psnr(shifted(img, 6), img)
    assert math.isfinite(small) and large < small


def test_ssim_is_one_for_identical_images_and_lower_when_shifted(images):
    img = images[1]
    assert pairwise.ssim(img, img) == pytest.approx(1.0)
    assert pairwise.ssim(shifted(img, 6), img) < pairwise.ssim(shifted(img, 1), img) < 1.0
    with pytest.raises(ValueError, match="differ in size"):
        pairwise.ssim(img, img[:16])


def test_lpips_random_backbone_is_zero_for_identical_and_positive_when_shifted(images):
    scorer = pairwise.LpipsScorer("alex", random_backbone=True)
    batch = np.stack(images[:3])
    same = scorer(batch, batch.copy())
    moved = scorer(np.stack([shifted(i) for i in images[:3]]), batch)
    assert same.shape == (3,) and np.allclose(same, 0.0, atol=1e-7)
    assert (moved > 1e-4).all()


def test_lpips_without_backbone_weights_names_the_file_and_the_options(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError) as err:
        pairwise.LpipsScorer("alex")
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message and "--lpips-backbone" in message
    assert "--lpips-random-backbone" in message and "\n" not in message


def test_lpips_backbone_loads_from_a_local_torchvision_file(tmp_path, images):
    import torchvision

    torch.manual_seed(3)
    squeezenet = torchvision.models.squeezenet1_1(weights=None)  # small: the same code path as alex/vgg
    path = tmp_path / "squeezenet.pth"
    torch.save(squeezenet.state_dict(), path)
    scorer = pairwise.LpipsScorer("squeeze", backbone_weights=str(path))
    loaded = scorer.model.net.slice3._modules["6"].squeeze.weight  # features[6]: a Fire module
    assert torch.equal(loaded, squeezenet.features[6].squeeze.weight)
    batch = np.stack(images[:2])
    assert np.allclose(scorer(batch, batch), 0.0, atol=1e-7)
    with pytest.raises(UserError, match="--lpips-backbone .*nope.pth: no such file"):
        pairwise.LpipsScorer("alex", backbone_weights=str(tmp_path / "nope.pth"))
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not torchvision squeezenet1_1 weights"):
        pairwise.LpipsScorer("squeeze", backbone_weights=str(tmp_path / "other.pth"))


def test_feature_stats_stream_equals_numpy_in_any_batch_order():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6))
    a, b = fid.FeatureStats(), fid.FeatureStats()
    for chunk in np.array_split(feats, 5):
        a.add(chunk)
    for chunk in np.array_split(feats[::-1], 3):
        b.add(chunk)
    mu, cov = a.mean_cov()
    assert np.allclose(mu, feats.mean(0)) and np.allclose(cov, np.cov(feats, rowvar=False))
    assert np.allclose(b.mean_cov()[1], cov)


def test_frechet_distance_agrees_with_clean_fid():
    from cleanfid.fid import frechet_distance as clean_fid_distance

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 5)), rng.normal(loc=0.5, size=(60, 5))
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = clean_fid_distance(*args)
    assert fid.frechet_distance(*args) == pytest.approx(expected, rel=1e-6)


def test_fid_is_zero_for_the_same_images_and_grows_with_a_shift(images):
    extractor = fid.build_extractor(MetricsConfig(metrics=("fid",), fid_extractor="pixels"))
    ref = fid.FeatureStats()
    ref.add(extractor(np.stack(images)))
    reference = fid.ReferenceStats("test", {fid.ALL: ref.mean_cov()})
    same, small, large = fid.FeatureStats(), fid.FeatureStats(), fid.FeatureStats()
    same.add(extractor(np.stack(images)))
    small.add(extractor(np.stack([shifted(i, 2) for i in images])))
    large.add(extractor(np.stack([shifted(i, 10) for i in images])))
    assert reference.fid(same) == pytest.approx(0.0, abs=1e-6)
    assert 0 < reference.fid(small) < reference.fid(large)
    assert reference.fid(same, "animals") is None  # no such reference partition


def test_reference_stats_are_cached_per_dataset_resolution_and_extractor(tmp_path, images):
    from PIL import Image

    coco, mjhq = tmp_path / "coco", tmp_path / "mjhq"
    for i, img in enumerate(images):
        (coco).mkdir(exist_ok=True)
        Image.fromarray(img).save(coco / f"{i}.png")
        category = mjhq / ("animals" if i % 2 else "people")
        category.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shifted(img, 5)).save(category / f"{i}.jpg")
    pixels = fid.build_extractor(MetricsConfig(metrics=("fid",), fid_extractor="pixels"))
    cache = tmp_path / "cache"
    a = fid.load_reference(coco, pixels, (32, 32), cache)
    b = fid.load_reference(mjhq, pixels, (32, 32), cache)
    c = fid.load_reference(coco, pixels, (16, 16), cache)
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 3 and len({a.source, b.source, c.source}) == 3
    assert any(n.startswith("coco-") and "_32x32_pixels4x4" in n for n in names)
    assert set(b.stats) == {fid.ALL, "animals", "people"} and set(a.stats) == {fid.ALL}
    again = fid.load_reference(coco, pixels, (32, 32), cache)  # from the cache file
    assert again.source == a.source and np.allclose(again.stats[fid.ALL][1], a.stats[fid.ALL][1])
    from_npz = fid.load_reference(a.source, pixels, None, cache)  # a stats file works as --fid-ref
    assert np.allclose(from_npz.stats[fid.ALL][0], a.stats[fid.ALL][0])


def test_missing_inception_weights_name_the_file_and_option(tmp_path):
    config = MetricsConfig(metrics=("fid",), inception_path=str(tmp_path))
    with pytest.raises(UserError, match="inception-2015-12-05.pt not found.*--inception"):
        fid.build_extractor(config)


def test_custom_extractor_by_module_path(images):
    extractor = fid.build_extractor(
        MetricsConfig(metrics=("fid",), fid_extractor="ecad_ray.metrics.fid:pixel_features")
    )
    assert extractor(np.stack(images[:2])).shape == (2, 48)
    with pytest.raises(UserError, match="--fid-extractor"):
        fid.build_extractor(MetricsConfig(metrics=("fid",), fid_extractor="no_such_module:f"))


def test_clip_score_is_100_times_the_clamped_cosine(tmp_path, images):
    from transformers import CLIPModel, CLIPProcessor

    from ecad_ray.metrics.clip_score import ClipScorer

    folder = tiny_clip(tmp_path / "clip")
    scorer = ClipScorer(str(folder))
    prompts = ["a red car", "a dog on a beach", "the sea"]
    scores = scorer(np.stack(images[:3]), prompts)
    model, processor = CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder)
    inputs = processor(text=prompts, images=[np.array(i) for i in images[:3]], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert np.allclose(scores, (100 * cos.clamp(min=0)).numpy(), atol=1e-4)
    assert scores.shape == (3,) and (scores >= 0).all()


def test_missing_clip_weights_name_the_model_and_how_to_supply_it(tmp_path):
    from ecad_ray.metrics.clip_score import ClipScorer

    with pytest.raises(UserError, match="openai/clip-vit-base-patch32.*--clip-model"):
        ClipScorer("openai/clip-vit-base-patch32")
    with pytest.raises(UserError, match="not a CLIP save_pretrained folder"):
        ClipScorer(str(tmp_path / "nothing"))


def test_imagereward_without_its_package_says_how_to_install(monkeypatch):
    import builtins

    from ecad_ray.metrics.imagereward import ImageRewardScorer

    real_import = builtins.__import__

    def no_imagereward(name, *args, **kwargs):
        if name == "ImageReward":
            raise ImportError("No module named 'ImageReward'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_imagereward)
    with pytest.raises(UserError, match=r"pip install 'ecad-ray\[imagereward\]'"):
        ImageRewardScorer("ImageReward-v1.0")


def test_imagereward_adapter_checks_files_and_feeds_pngs(monkeypatch, tmp_path, images):
    """With a stand-in for the `image-reward` package: what the adapter checks and passes on."""
    import sys
    import types

    from PIL import Image

    from ecad_ray.metrics.imagereward import ImageRewardScorer

    calls = {}

    class FakeModel:
        def score(self, prompt, image):
            with Image.open(image) as im:  # ImageReward opens whatever it is given with PIL
                return float(np.asarray(im).mean()) + len(prompt)

    def load(name, device, download_root):
        calls.update(name=name, device=device, root=download_root)
        return FakeModel()

    monkeypatch.setitem(sys.modules, "ImageReward", types.SimpleNamespace(load=load))
    with pytest.raises(UserError, match="ImageReward.pt and .*med_config.json not found.*--imagereward-root"):
        ImageRewardScorer("ImageReward-v1.0", root=str(tmp_path))
    (tmp_path / "ImageReward.pt").write_bytes(b"x")
    (tmp_path / "med_config.json").write_text("{}")
    scorer = ImageRewardScorer("ImageReward-v1.0", root=str(tmp_path))
    assert calls == {"name": str(tmp_path / "ImageReward.pt"), "device": "cpu", "root": str(tmp_path)}
    scores = scorer(np.stack(images[:2]), ["ab", "abcd"])
    assert np.allclose(scores, [images[0].mean() + 2, images[1].mean() + 4])


def test_metric_names_are_validated():
    from ecad_ray.metrics import parse_metric_names

    assert parse_metric_names("clip, LPIPS,clip") == ("clip", "lpips")
    with pytest.raises(UserError, match="--metrics clip,bleu"):
        parse_metric_names("clip,bleu")
