"""Budgets: `trainer.max_time` as `90s`, `10m`, `1h30m` or a number of seconds, and the periodic
evaluation's bounds under a model file's `trainer.eval_caps`."""

from __future__ import annotations

import re

from genlab.errors import GenlabError

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value, key: str = "trainer.max_time") -> float | None:
    """Seconds from 90, '90', '90s', '10m', '1h30m' (None or '' -> None, no budget)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "null", "none"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        m = _DURATION.match(text)
        if not m or not any(m.groups()):
            raise GenlabError(f"{key}={value} is not a duration; use seconds (90) or units h/m/s "
                              "(90s, 10m, 1h30m)") from None
        seconds = sum(float(g) * _UNITS[u] for g, u in zip(m.groups(), "hms") if g)
    if not seconds > 0:
        raise GenlabError(f"{key} must be > 0, got {value}")
    return seconds


def eval_bound(trainer, name: str) -> int | None:
    """trainer.eval_<name> under trainer.eval_caps.<name> (samples, nll_images, nll_k): the smaller one."""
    value, cap = trainer[f"eval_{name}"], trainer.eval_caps[name]
    return cap if value is None else value if cap is None else min(value, cap)
