"""Library writers that fail into genlab's one line: TensorBoard's event writer and the run's log file.

TensorBoard writes events from a background thread; when the disk is full that thread dies with a
traceback, and the error comes back to the training thread at the next event, without the file's
name. The log file handler Hydra installs (train.log) prints "--- Logging error ---" and a
traceback for every record it cannot write, and training goes on. Here both end the run with one
GenlabError naming the file; checkpoints are written atomically (engine/checkpoint.py), so last.pt
stays the last complete one.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from pathlib import Path

from genlab.engine.checkpoint import os_cause
from genlab.errors import GenlabError

_hooked = False


def _quiet_event_threads() -> None:
    """TensorBoard's writer thread keeps its error and raises it again where events are added: the
    thread's own traceback is noise, said once more as one line there."""
    global _hooked
    if _hooked:
        return
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args):
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook
    _hooked = True


class EventWriter:
    """torch's SummaryWriter whose failed writes are one GenlabError naming the event file."""

    def __init__(self, folder: Path | str):
        from torch.utils.tensorboard import SummaryWriter

        _quiet_event_threads()
        self.folder = Path(folder)
        self.path = self.folder
        self.failed = False
        self._w = self._guard(SummaryWriter, str(folder))
        # The event file's name (events.out.tfevents.<time>.<host>...) is only known to the writer.
        self.path = Path(getattr(self._w.file_writer.event_writer, "_file_name", self.folder))

    def _guard(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            self.failed = True
            raise GenlabError(f"cannot write {self.path} (TensorBoard events): {os_cause(e)}") from None

    def __getattr__(self, name):
        attr = getattr(self._w, name)
        return functools.partial(self._guard, attr) if callable(attr) else attr

    def close(self) -> None:
        """Flush and close; after a failed write, close quietly (the failure was said already)."""
        if self.failed:
            try:
                self._w.close()
            except OSError:
                pass
            return
        self._guard(self._w.close)

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _log_file_failed(handler: logging.FileHandler, default, record) -> None:
    err = sys.exc_info()[1]
    if not isinstance(err, OSError):
        return default(record)
    for lg in [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]:
        if handler in getattr(lg, "handlers", []):
            lg.removeHandler(handler)  # never tried again, so the error is said once
    raise GenlabError(f"cannot write {handler.baseFilename} (the run's log): {os_cause(err)}") from None


def guard_log_files() -> None:
    """Log file handlers (Hydra's train.log) that cannot write end the run with one line, not a traceback
    per record."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, logging.FileHandler) and not getattr(h, "_genlab_guarded", False):
                h.handleError = functools.partial(_log_file_failed, h, h.handleError)
                h._genlab_guarded = True
