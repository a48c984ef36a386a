"""Readers for files genlab did not write: none of them can run code, and a file whose content is not
what it claims is one GenlabError line that names the file and what is wrong.

- Pickles (CIFAR-10's python batches) go through a restricted unpickler that admits only the few
  numpy constructors an array needs; any other global (os.system, builtins.eval, ...) is refused
  before it is looked up, so no code from the file runs.
- torch files (reference caches, feature-network and Inception weights) are read with
  weights_only=True: tensors, numbers, strings and containers only.
- NPZ files are read with allow_pickle=False and their arrays checked for name, dtype and rank.
- Image headers are checked against a pixel-count limit before anything is decoded (decompression
  bombs), with PIL's own limit lifted so the one check and its message are ours.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
import zipfile
from pathlib import Path

from genlab.errors import GenlabError


class UnsafeFile(GenlabError):
    """A file that asks to run code (a pickle global outside the allowed few): refused, never executed."""


# ---- pickles ------------------------------------------------------------------------------------
def _numpy_globals() -> dict:
    """(module, name) -> object for the globals a pickled numpy array names (numpy 1 and 2 spell them)."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray

    def reconstruct(subtype, shape, dtype):
        # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by its state. The file
        # gets a token, not the class, so it cannot call ndarray(huge shape) itself, and any shape
        # but (0,) would allocate memory the file does not hold (the state sets the real shape).
        if subtype is not _NDARRAY or tuple(shape) != (0,):
            raise pickle.UnpicklingError("an array constructor with arguments numpy never writes")
        return multiarray._reconstruct(np.ndarray, shape, dtype)

    def frombuffer(buf, dtype, shape, order):
        # Protocol 5's form: the array's bytes are in the file, so the shape cannot claim more than it holds.
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    def encode(text, encoding="latin1"):
        # Protocol 2 written by Python 3 spells bytes as _codecs.encode(str, 'latin1').
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError("_codecs.encode with arguments pickle never writes")
        return text.encode("latin1")

    out = {}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    out[("numpy", "ndarray")] = _NDARRAY
    out[("numpy", "dtype")] = np.dtype
    out[("_codecs", "encode")] = encode
    return out


class _NDARRAY:
    """What a pickle gets for numpy.ndarray: a name for _reconstruct, not a constructor it can call."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray called directly")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numpy arrays, and nothing else."""

    def __init__(self, file, allowed: dict):
        super().__init__(file, encoding="latin1")  # CIFAR's batches were pickled by Python 2
        self.allowed = allowed

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise UnsafeFile(f"{module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def read_array_pickle(path: Path):
    """A pickle holding only containers, strings, numbers and numpy arrays (CIFAR-10's batches)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, _numpy_globals()).load()
    except UnsafeFile as e:
        raise UnsafeFile(f"{path} asks to run {e} while being read: refused (genlab never runs code from a data "
                         "file); the file is not what it claims, delete it and download the dataset again") from None
    except OSError as e:
        raise GenlabError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign pickle fails in many ways
        raise GenlabError(f"{path} is corrupt or not a pickle ({_first_line(e)}); delete it and download "
                          "the dataset again") from None


# ---- torch files ----------------------------------------------------------------------------------
def load_tensors(path: Path, what: str, corrupt: str = "it is corrupt, truncated or not a torch file",
                 advice: str = ""):
    """A torch file of tensors, numbers, strings and containers only (torch.load weights_only=True).

    A file that names any other global is refused unread; `corrupt` says what else a file that fails
    to load is, `advice` what to use instead of a refused one."""
    import errno

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. torch's note on pickle protocols: noise around our one line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # weights_only refused a global (a class or function)
            raise UnsafeFile(f"{what} {path} contains objects other than tensors{_refused_global(str(e))}: refused "
                             f"(genlab never runs code from a file){advice}") from None
        raise GenlabError(f"cannot read {what} {path}: {corrupt}") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.ENOENT, errno.EISDIR, errno.EIO, errno.ENOTDIR):
            raise GenlabError(f"cannot read {what} {path}: {e.strerror or e}") from None
        raise GenlabError(f"cannot read {what} {path}: {corrupt}") from None
    except Exception:  # noqa: BLE001 - a truncated zip, a foreign format ... fail in many ways
        raise GenlabError(f"cannot read {what} {path}: {corrupt}") from None


def _refused_global(message: str) -> str:
    """' (os.system)' from torch's 'Unsupported global: GLOBAL os.system ...' message, else ''."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", message)
    return f" ({m.group(1)})" if m else ""


# ---- NPZ ----------------------------------------------------------------------------------------
def read_npz(path: Path, arrays: dict[str, tuple[tuple[str, ...], int]]) -> dict:
    """Arrays of an .npz without pickles: arrays = {name: (dtype kinds e.g. ('u',), rank)}; each is checked."""
    import numpy as np

    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # an .npy (one array) under an .npz name
            raise GenlabError(f"{path} is a single .npy array, not an NPZ file of named arrays")
        with z:
            missing = [k for k in arrays if k not in z.files]
            if missing:
                raise GenlabError(f"{path} has no array '{missing[0]}' (it holds {', '.join(z.files) or 'nothing'})")
            out = {k: z[k] for k in arrays}
    except GenlabError:
        raise
    except OSError as e:
        raise GenlabError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UnsafeFile(f"{path} holds pickled objects: refused (genlab reads NPZ arrays of numbers only)") from None
        raise GenlabError(f"{path} is not an NPZ file of arrays ({_first_line(e)})") from None
    except (zipfile.BadZipFile, EOFError, KeyError) as e:
        raise GenlabError(f"{path} is corrupt or not an NPZ file ({_first_line(e)})") from None
    for k, (kinds, rank) in arrays.items():
        a = out[k]
        if a.dtype.kind not in kinds or a.ndim != rank:
            raise GenlabError(f"{path}: array '{k}' is {a.dtype} of shape {a.shape}; expected {rank} dimensions "
                              f"of dtype kind {'/'.join(kinds)}")
    return out


# ---- images -------------------------------------------------------------------------------------
@contextlib.contextmanager
def own_pixel_limit():
    """PIL's decompression-bomb check lifted for the block: genlab checks the pixel count itself."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_pixels(path: Path, size: tuple[int, int], limit: int | None) -> None:
    """An image's width x height is within dataset.max_pixels (a decompression bomb is refused unread)."""
    w, h = size
    if limit is not None and w * h > limit:
        raise GenlabError(f"image {path} is {w}x{h} = {w * h} pixels, over dataset.max_pixels={limit} (a "
                          "decompression bomb, or a huge image); raise dataset.max_pixels to accept it")


def image_problem(e: BaseException) -> str:
    """What PIL found wrong with a file, in a few words."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image PIL can identify"
    return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def tail(path: Path, n: int) -> bytes:
    """The last n bytes of a file."""
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read()
