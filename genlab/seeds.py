"""Seeds for the independent random streams of one run (fixed noise, evaluation subsets), each derived
from the run's seed and the stream's name by a hash, so no two streams share or overlap a seed (an
offset such as seed + 1 would make run 0's second stream run 1's first)."""

from __future__ import annotations

import hashlib


def derive(seed: int, stream: str) -> int:
    """A 63-bit seed for the named stream of a run seeded with `seed`."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
