"""Measured memory: what `add` sizes its batches by (`--memory-mb`).

The per-image cost of attributing a model (activations kept for the backward pass, the hooks of
the modified-gradient methods, the inverse preprocessing) differs a hundredfold between models, so
it is measured on the first small batch rather than guessed: the peak growth of the process's
resident set over that batch (on Linux: `/proc/self/clear_refs` resets the high-water mark, then
`VmHWM` is read), or of torch's allocator on CUDA. In a long-lived process (the demo, a Ray
worker, a notebook) memory freed by an earlier model stays in the C heap and is reused without the
resident set growing, which would read as a cost of 0; so the heap is first handed back to the OS
(glibc's ``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MB = 1 << 20
#: fits an 8 GB laptop with the OS, a browser and the desktop still running
DEFAULT_MEMORY_MB = 3072
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """The process's resident set now (None where the OS does not say)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int:
    """The process's peak resident set so far (since the last reset on Linux)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


@functools.cache
def _libc_name() -> str | None:
    """The C library's file name; found once (find_library runs ldconfig or a compiler)."""
    return ctypes.util.find_library("c")


def _trim_heap() -> None:
    """Return the C heap's free memory to the OS (glibc; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL(_libc_name()).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: musl and macOS return freed memory themselves or have no such call


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMeter:
    """Peak memory growth over a block, in bytes; ``growth`` is None where it cannot be measured."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = device
        self.cuda = str(device).startswith("cuda")
        self.base: int | None = None
        self.growth: int | None = None

    @contextmanager
    def measure(self) -> Iterator[PeakMeter]:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.growth = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        _trim_heap()
        self.base = rss_bytes()
        ok = self.base is not None and _reset_peak()
        yield self
        if ok:
            self.growth = max(0, peak_rss_bytes() - self.base)


def budget_bytes(memory_mb: int, device: str | torch.device) -> int:
    """The budget in bytes; on CUDA also capped by the free device memory."""
    budget = memory_mb * MB
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = min(budget, int(free * 0.9))
    return budget


def batch_for_budget(per_image: float, used: int, reserve: int, budget: int, cap: int) -> int:
    """Largest batch (1..cap) whose measured cost fits what the budget leaves after ``used`` (the
    process now) and ``reserve`` (memory still to be filled, e.g. the maps being collected)."""
    room = budget - used - reserve
    if per_image <= 0:
        return cap
    return max(1, min(cap, int(room // per_image)))
