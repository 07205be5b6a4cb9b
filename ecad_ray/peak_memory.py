"""Peak memory over one stretch of a run, measured one consistent way.

A "before" figure and a "peak" figure are only comparable when both come from the same
counter. Mixing psutil's current RSS with `getrusage().ru_maxrss` (what this module
replaces) gave a peak *below* the before figure by tens of KiB: the kernel keeps per-CPU
RSS deltas that the two readings fold in at different times. So:

- GPU: both from torch's allocator (`memory_allocated` before, `max_memory_allocated`
  after a reset of the peak counter).
- CPU on Linux: both from the kernel's RSS counters in `/proc/self/status`. The high-water
  mark (`VmHWM`) is reset at the start of the window by writing `5` to
  `/proc/self/clear_refs`, so the peak covers this window only, not the imports or
  earlier work of the same process (a test run, a notebook).
- Elsewhere (or where `clear_refs` is not writable): the process's lifetime peak, and the
  kind string says so.

The peak is the maximum over the window, and the window includes its first moment, so the
peak is never below the before figure by construction.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

KIND_CUDA = "torch.cuda.max_memory_allocated since loading began"
KIND_RSS_WINDOW = "peak RSS since loading began (kernel high-water mark, reset before loading)"
KIND_RSS_LIFETIME = "peak RSS of this process since it started (high-water mark cannot be reset here)"


@dataclass(frozen=True)
class MemoryFigures:
    """Bytes at the start of the window, the peak over it, and what was measured."""

    before_bytes: int
    peak_bytes: int
    kind: str


class MemoryWindow:
    """Start with `MemoryWindow(device)`, finish with `.figures()`; `device` is a torch device.

    Used by `ecad-ray image` (peak of loading + one generation) and the memory benchmarks,
    so every peak the project prints means the same thing.
    """

    def __init__(self, device) -> None:
        self._cuda = getattr(device, "type", str(device)) == "cuda"
        self._device = device
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(device)
            self._kind = KIND_CUDA
            self._before = int(torch.cuda.memory_allocated(device))
        else:
            self._kind = KIND_RSS_WINDOW if _reset_rss_high_water_mark() else KIND_RSS_LIFETIME
            self._before = current_rss_bytes()

    def figures(self) -> MemoryFigures:
        """The window's figures so far (call again later for a longer window)."""
        if self._cuda:
            import torch

            peak = int(torch.cuda.max_memory_allocated(self._device))
        else:
            peak = max(current_rss_bytes(), peak_rss_bytes())
        return MemoryFigures(before_bytes=self._before, peak_bytes=max(self._before, peak), kind=self._kind)


def _status_kib(field: str) -> int | None:
    """One `VmXXX:  1234 kB` field of /proc/self/status in KiB, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where impossible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def current_rss_bytes() -> int:
    """This process's resident set now, from the same counters as `peak_rss_bytes`."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark (since the last reset on Linux, else since start)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere
