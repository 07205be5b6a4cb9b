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


def test_frechet_distance_closed_forms():
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2 = 9 + (1 + 0 + 4)
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    assert fid.frechet_distance(mu1, np.diag([1.0, 4.0, 9.0]), mu2, np.diag([4.0, 4.0, 1.0])) == pytest.approx(14.0)
    # a scaled copy, S2 = k^2 S1 (full covariance): |dmu|^2 + (1 - k)^2 tr(S1)
    a = np.random.default_rng(2).normal(size=(4, 4))
    s1 = a @ a.T + np.eye(4)
    shift = np.array([0.5, -1.0, 0.0, 2.0])
    assert fid.frechet_distance(np.ones(4), s1, np.ones(4) + shift, 9 * s1) == pytest.approx(
        shift @ shift + 4 * np.trace(s1), rel=1e-9)
    assert fid.frechet_distance(mu2, s1, mu2, s1) == pytest.approx(0.0, abs=1e-9)
    # one dimension: (m1 - m2)^2 + (sd1 - sd2)^2
    assert fid.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[0.25]])) \
        == pytest.approx(9 + 1.5**2)


def test_fid_of_two_gaussian_feature_sets_equals_a_scipy_hand_computation():
    from scipy import linalg

    rng = np.random.default_rng(3)
    s1, s2 = np.array([[2, 0.5, 0], [0.5, 1, 0.2], [0, 0.2, 0.5]]), np.array([[1, 0, 0], [0, 3, 0.4], [0, 0.4, 1]])
    x = rng.multivariate_normal([0, 0, 0], s1, size=300)
    y = rng.multivariate_normal([1, 0, -1], s2, size=200)
    ref, gen = fid.FeatureStats(), fid.FeatureStats()
    ref.add(x)
    for chunk in np.array_split(y, 7):
        gen.add(chunk)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    d = x.mean(0) - y.mean(0)
    expected = d @ d + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert fid.ReferenceStats("x", {fid.ALL: ref.mean_cov()}).fid(gen) == pytest.approx(expected, rel=1e-9)
    population = 2 + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)  # |(1, 0, -1)|^2 = 2
    assert population == pytest.approx(2.8984, abs=1e-4) and expected == pytest.approx(population, abs=0.25)


def test_fid_of_a_set_with_itself_is_zero_and_a_shift_costs_what_clean_fid_says(images):
    from cleanfid.fid import fid_from_feats

    extractor = fid.build_extractor(MetricsConfig(metrics=("fid",), fid_extractor="pixels"))
    ref_feats = extractor(np.stack(images))
    ref = fid.FeatureStats()
    ref.add(ref_feats)
    reference = fid.ReferenceStats("test", {fid.ALL: ref.mean_cov()})
    values = []
    for pixels in (0, 2, 10):
        feats = extractor(np.stack([shifted(i, pixels) for i in images]))
        stats = fid.FeatureStats()
        stats.add(feats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = fid_from_feats(feats, ref_feats)
        values.append(reference.fid(stats))
        assert values[-1] == pytest.approx(max(expected, 0.0), rel=1e-6, abs=1e-6)
    assert values[0] == pytest.approx(0.0, abs=1e-6) and values[0] < values[1] < values[2]
    assert reference.fid(stats, "animals") is None  # no such reference partition


def fixed_conv_net():
    """A fixed random conv net (seeded) mapping float NCHW in [0, 255] to 16 nonlinear features.

    A deterministic stand-in for Inception (whose weights cannot be fetched offline), small
    enough that 24 images give full-rank covariances.
    """
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(8, 3, 9, 9, generator=g) / 15, torch.randn(4, 8, 3, 3, generator=g) / 5

    def features(x_NCHW: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.nn.functional.conv2d(x_NCHW.float().cpu() / 127.5 - 1, w1, stride=4))
        h = torch.tanh(torch.nn.functional.conv2d(h, w2, stride=2))
        return torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)

    return features


def _write_pngs(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """Two folders of 24 PNGs (32x32, so clean-fid's 299 resize really resizes): a and a shifted b."""
    root = tmp_path_factory.mktemp("fid")
    a = _write_pngs(root / "a", base_images(24, seed=4))
    b = _write_pngs(root / "b", [shifted(i, 5) for i in base_images(24, seed=5)])
    return root, a, b


def _generated_stats(files, extractor):
    stats = fid.FeatureStats()
    stats.add(extractor(np.stack([fid.load_rgb(f) for f in files])))
    return stats


def _clean_fid(dir1, dir2, features):
    from cleanfid.fid import compute_fid

    return compute_fid(str(dir1), str(dir2), mode="clean", custom_feat_extractor=features,
                       device=torch.device("cpu"), num_workers=0, batch_size=8, verbose=False)


def test_fid_equals_clean_fid_compute_fid_on_the_same_folders(two_folders, tmp_path):
    root, a, b = two_folders
    net = fixed_conv_net()
    extractor = fid.FeatureExtractor("fixed-conv", net)
    reference = fid.load_reference(root / "b", extractor, (32, 32), tmp_path / "cache")
    ours = reference.fid(_generated_stats(a, extractor))
    theirs = _clean_fid(root / "a", root / "b", net)
    assert theirs > 1e-3 and ours == pytest.approx(theirs, rel=1e-6)
    assert _clean_fid(root / "b", root / "b", net) == pytest.approx(0.0, abs=1e-6)
    assert reference.fid(_generated_stats(b, extractor)) == pytest.approx(0.0, abs=1e-6)


def test_clean_resize_is_clean_fids_own_299_resize(tmp_path):
    from cleanfid.resize import make_resizer
    from cleanfid.utils import ResizeDataset

    rng = np.random.default_rng(6)
    files = _write_pngs(tmp_path, [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)])
    ours = fid.clean_resize(np.stack([fid.load_rgb(f) for f in files]))
    theirs = torch.stack([ResizeDataset(files, mode="clean")[i] for i in range(len(files))])
    assert ours.shape == (3, 3, 299, 299) and ours.dtype == torch.float32
    assert torch.equal(ours, theirs)
    quantised = make_resizer("PIL", True, "bicubic", (299, 299))(fid.load_rgb(files[0]))  # the "legacy" choice
    assert not np.array_equal(quantised.astype(np.float32), ours[0].permute(1, 2, 0).numpy())


def test_npz_stats_written_as_clean_fid_writes_them_give_the_same_fid(two_folders, tmp_path):
    import inspect

    from cleanfid import fid as clean
    from cleanfid.fid import get_folder_features

    # clean-fid's make_custom_stats stores exactly these two arrays (the format we must read)
    assert "np.savez_compressed(outf, mu=mu, sigma=sigma)" in inspect.getsource(clean.make_custom_stats)
    root, a, b = two_folders
    net = fixed_conv_net()
    feats = get_folder_features(str(root / "b"), net, num_workers=0, batch_size=8, device=torch.device("cpu"),
                                mode="clean", verbose=False)
    mu, sigma = np.mean(feats, axis=0), np.cov(feats, rowvar=False)  # as make_custom_stats computes them
    compressed = tmp_path / "b_clean_custom_na.npz"  # clean-fid's own file name for custom stats "b"
    np.savez_compressed(compressed, mu=mu, sigma=sigma)
    plain = tmp_path / "b_plain.npz"
    np.savez(plain, mu=mu, sigma=sigma)
    extractor = fid.FeatureExtractor("fixed-conv", net)
    generated = _generated_stats(a, extractor)
    expected = _clean_fid(root / "a", root / "b", net)
    for path in (compressed, plain):
        reference = fid.load_reference(path, extractor, None, tmp_path / "cache")
        assert set(reference.stats) == {fid.ALL} and reference.source == str(path)
        assert reference.fid(generated) == pytest.approx(expected, rel=1e-6)
    np.savez(tmp_path / "kid.npz", feats=feats)  # clean-fid's KID file holds features, not statistics
    with pytest.raises(UserError, match="needs arrays mu and sigma"):
        fid.load_reference(tmp_path / "kid.npz", extractor, None, tmp_path / "cache")


def test_inception_path_feeds_the_network_what_clean_fids_wrapper_does(tmp_path, images):
    from cleanfid.inception_torchscript import InceptionV3W

    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 16)  # 8 x 16 x 16 = 2048

    class StandIn(torch.nn.Module):  # same attributes as inception-2015-12-05.pt: .layers, forward
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    torch.jit.script(StandIn()).save(str(tmp_path / "inception-2015-12-05.pt"))
    ours = fid.build_extractor(MetricsConfig(metrics=("fid",), inception_path=str(tmp_path)))
    theirs = InceptionV3W(str(tmp_path), download=False)
    batch = np.stack(images[:3])
    with torch.no_grad():
        expected = theirs(fid.clean_resize(batch)).double().numpy()
    assert ours.name == "inception-v3-clean" and ours(batch).shape == (3, 2048)
    assert np.array_equal(ours(batch), expected)


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
    b = fid.load_reference(mjhq, pixels, (32, 32), cache)  # MJHQ first, as in ECAD's bug
    a = fid.load_reference(coco, pixels, (32, 32), cache)
    c = fid.load_reference(coco, pixels, (16, 16), cache)
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 3 and len({a.source, b.source, c.source}) == 3
    assert any(n.startswith("coco-") and "_32x32_pixels4x4" in n for n in names)
    assert set(b.stats) == {fid.ALL, "animals", "people"} and set(a.stats) == {fid.ALL}
    fresh = _generated_stats(sorted(coco.glob("*.png")), pixels).mean_cov()  # COCO's own, no cache
    assert np.allclose(a.stats[fid.ALL][0], fresh[0]) and np.allclose(a.stats[fid.ALL][1], fresh[1])
    assert not np.allclose(a.stats[fid.ALL][0], b.stats[fid.ALL][0])  # never MJHQ's statistics
    again = fid.load_reference(coco, pixels, (32, 32), cache)  # from the cache file
    assert again.source == a.source and np.allclose(again.stats[fid.ALL][1], a.stats[fid.ALL][1])
    from_npz = fid.load_reference(a.source, pixels, None, cache)  # a stats file works as --fid-ref
    assert np.allclose(from_npz.stats[fid.ALL][0], a.stats[fid.ALL][0])


def test_same_folder_name_or_replaced_images_never_reuse_cached_stats(tmp_path, images):
    import os

    pixels = fid.build_extractor(MetricsConfig(metrics=("fid",), fid_extractor="pixels"))
    cache = tmp_path / "cache"
    first = _write_pngs(tmp_path / "x" / "ref", images)
    _write_pngs(tmp_path / "y" / "ref", [shifted(i, 7) for i in images])
    x = fid.load_reference(tmp_path / "x" / "ref", pixels, (32, 32), cache)
    y = fid.load_reference(tmp_path / "y" / "ref", pixels, (32, 32), cache)
    assert x.source != y.source and not np.allclose(x.stats[fid.ALL][0], y.stats[fid.ALL][0])
    replaced = _write_pngs(tmp_path / "x" / "ref", [shifted(i, 3) for i in images])  # same names and count
    assert replaced == first
    for f in replaced:  # a later edit: its modification time moves on
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    again = fid.load_reference(tmp_path / "x" / "ref", pixels, (32, 32), cache)
    expected = _generated_stats(replaced, pixels).mean_cov()
    assert again.source != x.source and np.allclose(again.stats[fid.ALL][0], expected[0])


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
