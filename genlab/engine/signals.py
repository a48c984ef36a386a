"""Stop requests from outside (SIGTERM, SIGUSR1, SIGINT): a flag the loop polls at step boundaries.

A launcher that already handles a signal in Python (hydra-submitit-launcher requeues its SLURM job on
SIGUSR2) is not overridden but chained: the stop is requested, the step finishes, last.pt is written,
and then `hand_over` runs the launcher's handler, so the requeued job resumes from a fresh last.pt.

The first signal only sets the flag, so the current trainer step finishes and last.pt describes a
state the loop really reached (resuming from it is exact). A second signal stops at once: the
checkpoint writer is atomic, so the previous last.pt stays intact. `stop_requested()` is the one
question the loop asks; a distributed run can answer it for all ranks by reducing this flag.
"""

from __future__ import annotations

import contextlib
import signal
import threading

# Exit statuses of a run stopped by a signal (128 + the Linux signal number, as shells report it).
# 138 (SIGUSR1, SLURM's "time is nearly up" signal) means: last.pt is written, requeue the job.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
if hasattr(signal, "SIGUSR1"):
    EXIT_CODES[signal.SIGUSR1] = 138
# submitit's time-out/preemption signal: caught only when a launcher installed a handler for it.
CHAINED_ONLY = {signal.SIGUSR2: 140} if hasattr(signal, "SIGUSR2") else {}
EXIT_CODES.update(CHAINED_ONLY)

_requested: int | None = None
_chained: dict[int, object] = {}  # signal -> the Python handler that was installed before ours
_at_once = False  # inside `interruptible()`: a stop signal raises Interrupted


class Stopped(Exception):
    """Raised after the loop stopped on request and wrote its checkpoint."""

    def __init__(self, signum: int, step: int, path, during: str | None = None):
        self.signum, self.step, self.path = signum, step, path
        when = f" during {during}" if during else ""
        super().__init__(f"stopped by {signal.Signals(signum).name}{when} at step {step}; checkpoint {path}")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


class Interrupted(BaseException):
    """A stop signal inside `interruptible()`: the work is abandoned at once (a BaseException, so that no
    `except Exception` in an evaluation swallows it)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def _is_launcher_handler(h) -> bool:
    return callable(h) and h is not signal.default_int_handler and h is not _handler


def stop_requested() -> bool:
    """Whether a stop signal arrived since the handlers were installed."""
    return _requested is not None


def requested_signal() -> int | None:
    """The signal number of the first stop request, or None."""
    return _requested


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask the loop to stop after the current step (what the signal handler does)."""
    global _requested
    _requested = int(signum)


def _handler(signum, frame) -> None:
    if _requested is not None and not _at_once:
        # A second request: the user does not want to wait for the step to finish.
        raise KeyboardInterrupt
    request_stop(signum)
    raise_if_at_once(signum)


def raise_if_at_once(signum: int) -> None:
    """What a stop handler does last: inside `interruptible()`, raise Interrupted now."""
    if _at_once:
        raise Interrupted(signum)


@contextlib.contextmanager
def interruptible(pending: int | None = None):
    """Within the block a stop signal raises Interrupted at once instead of waiting for a step to end.

    For work after the last checkpoint (the final images and evaluation, which for a likelihood model
    with the full protocol can take an hour): stopping loses nothing that resuming does not redo. A
    stop requested just before the block (during the final save; `pending` for one that a distributed
    run's own handler marked) raises on entry."""
    global _at_once
    if (pending or _requested) is not None:
        raise Interrupted(pending or _requested)
    _at_once = True
    try:
        yield
    finally:
        _at_once = False


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM/SIGUSR1 request a stop instead of killing the process."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers; the process default applies
        return
    previous = {}
    _chained.clear()
    for s in EXIT_CODES:
        current = signal.getsignal(s)
        if current is signal.SIG_IGN:
            continue  # e.g. nohup or a background job: whoever started us asked to ignore it
        if s in CHAINED_ONLY and not _is_launcher_handler(current):
            continue  # nobody asked for SIGUSR2: keep the process default
        try:
            previous[s] = signal.signal(s, _handler)
        except (ValueError, OSError):
            continue
        if _is_launcher_handler(current) and s != signal.SIGINT:
            _chained[s] = current
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def at_once():
    """For commands with nothing to save on the way (eval, sample): a stop signal raises Interrupted at once."""
    with stop_on_signals(), interruptible():
        yield


def hand_over(signum: int | None) -> None:
    """After the checkpoint is written: run the launcher's own handler for this signal (e.g. requeue)."""
    handler = _chained.pop(int(signum), None) if signum else None
    if handler is not None:
        handler(int(signum), None)
