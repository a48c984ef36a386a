"""CPU threads for torch: a default that suits small networks and machines shared with other jobs."""

from __future__ import annotations

import os

MAX_DEFAULT_THREADS = 8


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_threads(kind: str) -> int:
    """trainer.num_threads=null: 1 for point data, else the idle cores (cores minus the load average).

    Measured on a shared 2-core machine (README, "Threads"): a 256-wide MLP update took 9.9 ms with one
    thread and 235 ms with two (13 ms with OMP_WAIT_POLICY=PASSIVE); DCGAN-size convs 87 ms vs 292 ms
    (96 ms passive). A thread that has to wait for a busy core stalls every parallel region, so only
    idle cores are used, and toy-data MLPs are too small to split at all.
    """
    if kind == "points":
        return 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        load = 0.0
    # Under torchrun, the processes of one machine share its idle cores.
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_THREADS, (usable_cores() - int(round(load))) // local))
