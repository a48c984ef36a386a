"""genlab: a config-driven lab for training and comparing generative models."""

from __future__ import annotations

__version__ = "0.1.0"


def source_commit() -> str:
    """The short commit of genlab's source tree ('+changes' if it has uncommitted edits), 'unknown' if it
    is not a git checkout (an installed wheel). Each run records it in status.json (`commits`)."""
    global _COMMIT
    if _COMMIT is None:
        import subprocess
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=10)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            _COMMIT = out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
        except (OSError, subprocess.SubprocessError):
            _COMMIT = "unknown"
    return _COMMIT


_COMMIT: str | None = None
