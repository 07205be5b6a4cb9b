"""`ecad_ray.peak_memory`: before and peak from one counter, over one window of the process."""

from __future__ import annotations

import sys

import pytest
import torch

from ecad_ray.peak_memory import KIND_RSS_WINDOW, MemoryWindow

CPU = torch.device("cpu")
MIB = 2**20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset is Linux-only")


def _touch(size: int) -> bytearray:
    """`size` bytes that are really resident (every page written)."""
    block = bytearray(size)
    for i in range(0, size, 4096):
        block[i] = 1
    return block


@linux_only
def test_window_peak_sees_an_allocation_inside_it():
    window = MemoryWindow(CPU)
    block = _touch(120 * MIB)
    del block  # freed before the reading: only the high-water mark remembers it
    figures = window.figures()
    assert figures.kind == KIND_RSS_WINDOW
    assert figures.peak_bytes - figures.before_bytes >= 110 * MIB


@linux_only
def test_window_ignores_a_peak_from_before_it_started():
    block = _touch(200 * MIB)
    del block  # the process's lifetime peak is now >= 200 MiB above the current RSS
    figures = MemoryWindow(CPU).figures()
    assert figures.peak_bytes - figures.before_bytes < 50 * MIB


def test_peak_is_never_below_before_over_many_windows():
    for _ in range(200):  # the old psutil-vs-getrusage pair failed this by luck
        figures = MemoryWindow(CPU).figures()
        assert 0 < figures.before_bytes <= figures.peak_bytes
