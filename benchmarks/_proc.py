"""What the benchmarks read about their own process from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def rchar() -> int:
    """Bytes this process has read so far (files and pipes; /proc/self/io), 0 where unavailable."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0
