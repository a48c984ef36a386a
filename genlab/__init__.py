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


def machine_name() -> str:
    """The CPU model and core count (and the first GPU's name when torch is already imported and sees
    one): the machine a run trained on, recorded in status.json (`machines`) and the zoo's header."""
    import os
    import platform
    import sys
    from pathlib import Path

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")  # never imported for this: a torch-free caller gets the CPU alone
    if torch is not None and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
