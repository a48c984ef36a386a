"""Progress bars on stderr, shown only where someone watches (a terminal) unless asked for."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class _Silent:
    """A bar that draws nothing."""

    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None):
    """A progress bar over `total` units with `.update(n=1)`; enabled=None: on only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True) as t:
        yield t
