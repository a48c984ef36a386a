"""Progress on every wait: a bar on stderr with the time left, on only when stderr is a terminal.

`bar(total, desc, unit)` is the one way genlab shows progress outside the training loop (sampling,
feature passes, the test NLL, feature-network training, the zoo's jobs). A command's `progress=false`
calls `configure(False)`, which turns every later bar off; `enabled=True/False` forces one bar.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

#: False after `configure(False)` (progress=false): every bar off unless it is forced on
_allowed = True
#: a wait shorter than this shows no bar at all (a bar that flashes for 0.1 s is noise, not progress)
#: (GENLAB_PROGRESS_DELAY overrides it, e.g. 0 in tests that must see a bar whatever the machine's speed)
DELAY_S = float(os.environ.get("GENLAB_PROGRESS_DELAY", "0.5"))


def configure(progress: bool) -> None:
    """Set the commands' progress= switch: False turns every later bar off, True lets them follow stderr."""
    global _allowed
    _allowed = bool(progress)


def is_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar shows: as forced, else on when progress is allowed and stderr is a terminal."""
    if enabled is not None:
        return bool(enabled)
    return _allowed and _terminal()


def _terminal() -> bool:
    return sys.stderr.isatty()


def bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None) -> tqdm:
    """A context manager with .update(n=1): a bar on stderr with rate and time left (tqdm's estimate)."""
    rows = _rows()  # tqdm's dynamic sizing would read the 0 lines again: fixed sizes there
    return tqdm(total=int(total), desc=desc, unit=unit, disable=not is_enabled(enabled), file=sys.stderr,
                dynamic_ncols=rows is None, nrows=rows, delay=DELAY_S, leave=True)


def _rows() -> int | None:
    """A terminal that reports 0 lines (a fresh pty, `script`) would hide every bar: assume 24 there."""
    try:
        return None if os.get_terminal_size(sys.stderr.fileno()).lines else 24
    except (OSError, ValueError):
        return None


def duration(seconds: float) -> str:
    """A rough human duration for cost lines: 'about 40 s', 'about 7 min', 'about 2.5 h'."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"about {max(1, round(s))} s"
    if s < 90 * 60:
        return f"about {round(s / 60)} min"
    return f"about {s / 3600:.1f} h"
