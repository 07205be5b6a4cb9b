"""DFT spectra of VAR intermediates: the radial profile orders frequencies low to high."""

import numpy as np
import torch

from ecad_ray.var.outputs import log_spectrum
from ecad_ray.var.spectra import radial_profile


def test_radial_profile_puts_low_frequencies_first():
    smooth = np.linspace(0, 1, 16)[None, :].repeat(16, 0)
    checker = (np.indices((16, 16)).sum(0) % 2).astype(float)
    prof_smooth = radial_profile(log_spectrum(torch.tensor(smooth)[None]))
    prof_checker = radial_profile(log_spectrum(torch.tensor(checker)[None]))
    assert len(prof_smooth) == 9
    assert prof_smooth[-1] < prof_smooth[0] and prof_checker[-1] > prof_smooth[-1]
