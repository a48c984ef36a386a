"""Progress bars for long loops (denoising chains, evaluations): on stderr, and only when it is a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None):
    """A context manager whose `.update(n=1)` advances a bar of `total` steps; enabled=None: only on a tty."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    b = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        yield b
    finally:
        b.close()
