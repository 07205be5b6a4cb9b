"""The demo denoiser's training loss: right target per prediction type, logit-normal timesteps."""

import pytest
import torch

from ecad_ray.models.demo_train import TrainConfig, denoiser_loss, sample_timesteps


def _batch(n=64):
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, 4, 8, 8, generator=gen)
    noise = torch.randn(n, 4, 8, 8, generator=gen)
    alpha_bar = torch.linspace(0.02, 0.98, n)
    return z0, noise, alpha_bar


def test_v_prediction_target_is_zero_loss_and_noise_is_not():
    z0, noise, ab = _batch()
    a = ab.view(-1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * z0
    assert denoiser_loss(v, z0, noise, ab, "v_prediction", 5.0) == 0
    assert denoiser_loss(noise, z0, noise, ab, "v_prediction", 5.0) > 0.1
    assert denoiser_loss(noise, z0, noise, ab, "epsilon", 5.0) == 0


def test_v_prediction_recovers_clean_latent_through_the_scheduler_formula():
    """x0 = sqrt(ab) z_t - sqrt(1-ab) v: the target the sampler inverts is the one trained on."""
    z0, noise, ab = _batch()
    a = ab.view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * z0
    torch.testing.assert_close(a.sqrt() * zt - (1 - a).sqrt() * v, z0)


def test_unknown_prediction_type_is_refused():
    z0, noise, ab = _batch(4)
    with pytest.raises(ValueError, match="sample"):
        denoiser_loss(noise, z0, noise, ab, "sample", 5.0)


def test_timesteps_are_logit_normal_mid_heavy_and_in_range():
    t = sample_timesteps(20_000, 1000, TrainConfig(), torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999
    mid = ((t >= 250) & (t < 750)).float().mean().item()
    assert 0.7 < mid < 0.8  # logit-normal(0, 1): ~74% of draws in the middle half (uniform: 50%)
