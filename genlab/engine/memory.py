"""Host memory for the training loop: glibc keeps the memory a step frees for the next step.

A training step allocates and frees the same few hundred kilobyte-to-megabyte tensors every time.
glibc's malloc hands large ones to mmap and trims the top of its heap as soon as enough of it is
free, so the next step faults the same pages back in (zeroed by the kernel): measured on grid25
WGAN-GP (256-wide MLPs, batch 256, one thread), ~1000 page faults and 3-4 ms of system time per
step, 9% of the step, while a bare loop whose frees happened to fall elsewhere had none
(docs/performance.md). Fixed thresholds keep a working set below them in the heap, as
PyTorch's CUDA caching allocator keeps GPU memory; larger buffers still come from mmap and are
returned when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit: buffers above 32 MiB still use mmap
TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top beyond this is given back


def keep_freed_memory() -> bool:
    """Fixed malloc thresholds on glibc (True when set; False on other C libraries, which keep their own)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
