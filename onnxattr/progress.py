"""Progress of long work: a rich bar on a terminal, plain timed lines otherwise.

Logs, CI and notebooks are not terminals: a live bar there prints nothing useful (or a screenful
of redraws), so the caller's plain `log` lines (one per model and per stage, each with its time)
are what such users see.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def is_interactive() -> bool:
    """True when progress bars can redraw in place (stderr is a terminal)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def track(items: Iterable[T], label: str, enabled: bool = True) -> Iterable[T] | Iterator[T]:
    """`items` with a transient rich bar on a terminal; unchanged otherwise."""
    if not enabled or not is_interactive():
        return items
    from rich.console import Console
    from rich.progress import track as rich_track

    return rich_track(items, description=label, transient=True, console=Console(stderr=True))


class Stopwatch:
    """Seconds per stage: `lap()` returns the time since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        return seconds

    def total(self) -> float:
        return time.perf_counter() - self.start
