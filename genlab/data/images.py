"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10 (torchvision files, offline locations) and folders.

Everything is loaded once into uint8 tensors (N, C, H, W); resizing and channel conversion happen
here, at load time, so training only indexes.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genlab import safeio
from genlab.data.base import Data, Spec
from genlab.data.schema import MAX_PIXELS
from genlab.errors import GenlabError

# name -> (torchvision class name, native shape, number of classes, class names)
IMAGE_DATASETS = {
    "mnist": ("MNIST", (1, 28, 28), 10, [str(i) for i in range(10)]),
    "fashion_mnist": ("FashionMNIST", (1, 28, 28), 10,
                      ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                       "sneaker", "bag", "ankle boot"]),
    "cifar10": ("CIFAR10", (3, 32, 32), 10,
                ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]),
}

# Offline locations that Linux distributions install datasets to (Debian's dataset-fashion-mnist).
SYSTEM_DIRS = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def data_root(cfg) -> Path:
    """Where datasets live: dataset.root (default: $GENLAB_DATA or ./data)."""
    return Path(os.path.expanduser(str(cfg.root)))


# ---- IDX (MNIST-format) files -----------------------------------------------------------------
def _idx_problem(path: Path, what: str) -> GenlabError:
    return GenlabError(f"{path} {what}; delete it and download it again")


def idx_header(path: Path) -> tuple[int, ...]:
    """An IDX file's dimensions from its header, checked against its size without reading the body."""
    gz = str(path).endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise _idx_problem(path, "is not an IDX file (bad magic number: it does not start with 0x0000)")
            if head[2] != 0x08:
                raise _idx_problem(path, f"holds data of IDX type 0x{head[2]:02x}; only unsigned bytes (0x08) are supported")
            raw = f.read(4 * head[3])
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise _idx_problem(path, f"cannot be read ({type(e).__name__}: {e})") from None
    if len(raw) < 4 * head[3]:
        raise _idx_problem(path, "is truncated inside its header")
    dims = struct.unpack(">" + "I" * head[3], raw)
    expected = 4 + 4 * len(dims) + math.prod(dims)
    if gz:
        # gzip's trailer holds the uncompressed size (mod 2^32): a truncated file ends in other bytes.
        if int.from_bytes(safeio.tail(path, 4), "little") != expected % 2**32:
            raise _idx_problem(path, f"is truncated or corrupt (its gzip trailer does not give the {expected} bytes "
                                     f"its header {'x'.join(map(str, dims))} needs)")
    else:
        size = path.stat().st_size
        if size != expected:
            raise _idx_problem(path, f"has {size} bytes but its header {'x'.join(map(str, dims))} needs {expected} "
                                     f"({'truncated' if size < expected else 'extra bytes after the data'})")
    return dims


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    dims = idx_header(path)
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _idx_problem(path, f"is truncated or corrupt ({type(e).__name__}: {e})") from None
    offset = 4 + 4 * len(dims)
    if len(data) != offset + math.prod(dims):
        raise _idx_problem(path, f"holds {len(data) - offset} data bytes, its header {'x'.join(map(str, dims))} "
                                 f"{math.prod(dims)}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for suffix in ("", ".gz"):
            p = d / (stem + suffix)
            if p.is_file():
                return p
    return None


def _idx_dirs(name: str, root: Path) -> list[Path]:
    tv = IMAGE_DATASETS[name][0]
    dirs = [root / tv / "raw", root / name, root]
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, [])]
    return dirs


def _idx_pairs(name: str, root: Path) -> dict[str, tuple[Path, Path]] | None:
    dirs = _idx_dirs(name, root)
    pairs = {split: (_find_idx(dirs, img), _find_idx(dirs, lab)) for split, (img, lab) in IDX_FILES.items()}
    return None if any(p is None for pair in pairs.values() for p in pair) else pairs


def _check_idx_pair(name: str, images: Path, labels: Path) -> None:
    """The headers of an images/labels pair: N x H x W images of the dataset's size, N labels."""
    _, (_, h, w), _, _ = IMAGE_DATASETS[name]
    di, dl = idx_header(images), idx_header(labels)
    if len(di) != 3 or di[1:] != (h, w):
        raise _idx_problem(images, f"holds {'x'.join(map(str, di))} values, not N images of {h}x{w}")
    if len(dl) != 1:
        raise _idx_problem(labels, f"holds {'x'.join(map(str, dl))} values, not a list of labels")
    if di[0] != dl[0]:
        raise GenlabError(f"{images} has {di[0]} images but {labels} has {dl[0]} labels")


def _load_idx_dataset(name: str, root: Path):
    pairs = _idx_pairs(name, root)
    if pairs is None:
        return None, _idx_dirs(name, root)
    k = IMAGE_DATASETS[name][2]
    out = {}
    for split, (pi, pl) in pairs.items():
        _check_idx_pair(name, pi, pl)
        x, y = read_idx(pi), read_idx(pl)
        if y.size and int(y.max()) >= k:
            raise _idx_problem(pl, f"holds label {int(y.max())}; {name} has classes 0..{k - 1}")
        out[split] = (torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    return out, _idx_dirs(name, root)


# ---- CIFAR-10's python batches --------------------------------------------------------------------
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 3 x 32 x 32 images, int64 labels) of one batch, read without running code from it."""
    st = path.stat()
    return _cifar_batch(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=len(CIFAR_BATCHES["train"]) + 1)
def _cifar_batch(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    # Keyed by size and mtime: the pre-flight check reads each batch once and the run reuses it.
    p = Path(path)
    entry = safeio.read_array_pickle(p)

    def bad(what: str) -> GenlabError:
        return GenlabError(f"{p} is not a CIFAR-10 batch ({what}); delete {p.parent} and download again")

    if not isinstance(entry, dict):
        raise bad(f"it holds a {type(entry).__name__}, not a dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"'data' is {got}, not uint8 N x 3072")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise bad(f"'labels' is not a list of {len(data)} labels")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise bad("'labels' are not whole numbers") from None
    if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() > 9)):
        raise bad("'labels' are not class numbers 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar10(root: Path):
    d = root / "cifar-10-batches-py"
    if not (d / "data_batch_1").is_file():
        return None, [d]
    out = {}
    for split, names in CIFAR_BATCHES.items():
        xs, ys = zip(*(read_cifar_batch(d / n) for n in names))
        out[split] = (torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
    _cifar_batch.cache_clear()  # the batches now live in `out`: do not hold them twice
    return out, [d]


def check_files(name: str, root: Path) -> None:
    """The dataset's files hold what they claim: IDX headers and sizes, CIFAR batches read safely."""
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        for n in (n for names in CIFAR_BATCHES.values() for n in names):
            read_cifar_batch(d / n)
        return
    for pi, pl in _idx_pairs(name, root).values():
        _check_idx_pair(name, pi, pl)


def _download(name: str, root: Path) -> str | None:
    """Try torchvision's download; return an error description on failure."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, IMAGE_DATASETS[name][0])
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        return f"is the network reachable? {_download_reason(e)}"
    return None


def _download_reason(e: BaseException) -> str:
    """The innermost cause of a failed download, on one line (torchvision lists every mirror it tried)."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # "Error downloading x:\nTried URL, got:\n<urlopen error ...>": the reason is the last line.
    reason = lines[-1] if lines else type(e).__name__
    return reason.strip("<>")[:160]


def _missing(name: str, root: Path) -> list[Path] | None:
    """None when every file of the dataset is on disk (nothing is read), else the folders looked in."""
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        return None if all((d / n).is_file() for names in CIFAR_BATCHES.values() for n in names) else [d]
    return None if _idx_pairs(name, root) is not None else _idx_dirs(name, root)


def _download_cleanly(name: str, root: Path) -> str | None:
    """_download, removing the (empty) folders it made when it fails: a failed start leaves nothing."""
    tv = IMAGE_DATASETS[name][0]
    new = [p for p in (root / tv / "raw", root / tv, root, *root.parents) if not p.exists()]  # innermost first
    err = _download(name, root)
    if err is not None:
        for d in new:
            with contextlib.suppress(OSError):  # rmdir refuses a folder that is not empty
                d.rmdir()
    return err


def check_present(cfg) -> None:
    """Before a run starts: the dataset's files exist (downloaded now if allowed) and hold what they
    claim; else one line."""
    name, root = cfg.name, data_root(cfg)
    looked = _missing(name, root)
    if looked is None:
        check_files(name, root)
        return
    if cfg.download:
        err = _download_cleanly(name, root)
        if _missing(name, root) is None:
            check_files(name, root)
            return
        raise GenlabError(
            f"dataset {name} not found and the download failed ({err}); looked in "
            f"{', '.join(str(p) for p in looked)}. Put the files there (torchvision layout) or "
            f"point dataset.root / GENLAB_DATA at them")
    raise GenlabError(
        f"dataset {name} not found (dataset.download=false); looked in "
        f"{', '.join(str(p) for p in looked)}. Put the files there, point dataset.root (or GENLAB_DATA) at "
        f"them, or set dataset.download=true")


def _load_splits(name: str, cfg):
    check_present(cfg)
    loader = _load_cifar10 if name == "cifar10" else (lambda r: _load_idx_dataset(name, r))
    return loader(data_root(cfg))[0]


# ---- conversions ------------------------------------------------------------------------------
def convert(x: torch.Tensor, channels: int | None, size: int | None) -> torch.Tensor:
    """uint8 (N,C,H,W) to `channels` channels and size x size pixels (area/bilinear resize)."""
    if channels is not None and channels != x.shape[1]:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1 and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise GenlabError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        out = []
        for i in range(0, len(x), 4096):
            xb = x[i:i + 4096].float()
            if xb.shape[2] != xb.shape[3]:
                s = min(xb.shape[2], xb.shape[3])
                t, l = (xb.shape[2] - s) // 2, (xb.shape[3] - s) // 2
                xb = xb[:, :, t:t + s, l:l + s]
            xb = F.interpolate(xb, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(xb.round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return x


def _select(x, y, classes, limit):
    if classes is not None:
        keep = torch.isin(y, torch.tensor(list(classes), dtype=y.dtype))
        x, y = x[keep], y[keep]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def torchvision_dataset(cfg, seed: int = 0) -> Data:
    """MNIST, Fashion-MNIST or CIFAR-10 from local files, the system's dataset packages, or a download."""
    name = cfg.name
    if name not in IMAGE_DATASETS:
        raise GenlabError(f"unknown image dataset '{name}'; choose one of {', '.join(IMAGE_DATASETS)}")
    splits = _load_splits(name, cfg)
    _, shape, k, class_names = IMAGE_DATASETS[name]
    tensors = []
    for split in ("train", "test"):
        x, y = _select(*splits[split], cfg.classes, cfg.limit if split == "train" else None)
        if len(x) == 0:
            raise GenlabError(f"dataset {name} has no {split} images for classes {list(cfg.classes)}")
        tensors += [convert(x, cfg.channels, cfg.image_size), y]
    return Data(name, "image", tensors[0], tensors[1], tensors[2], tensors[3], num_classes=k,
                class_names=class_names, seed=seed, binarize=cfg.binarize)


def _tv_spec(cfg) -> Spec:
    if cfg.name not in IMAGE_DATASETS:
        raise GenlabError(f"unknown image dataset '{cfg.name}'; choose one of {', '.join(IMAGE_DATASETS)}")
    _, (c, h, _), k, _ = IMAGE_DATASETS[cfg.name]
    if cfg.classes is not None:
        bad = [c for c in cfg.classes if not 0 <= c < k]
        if bad or not len(cfg.classes):
            raise GenlabError(f"dataset.classes={list(cfg.classes)}: {cfg.name} has classes 0..{k - 1}; "
                              "give a non-empty list of those")
    size = cfg.image_size or h
    return Spec("image", (cfg.channels or c, size, size), k, binarized=cfg.binarize is not None)


torchvision_dataset.spec = _tv_spec
torchvision_dataset.check = check_present

# ---- folders of images ------------------------------------------------------------------------
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _load_image(path: Path, channels: int, size: int, max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    from PIL import Image

    try:
        with safeio.own_pixel_limit(), Image.open(path) as im:
            safeio.check_pixels(path, im.size, max_pixels)
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            l, t = (w - size) // 2, (h - size) // 2
            im = im.crop((l, t, l + size, t + size))
            arr = np.asarray(im, dtype=np.uint8)
    except GenlabError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise GenlabError(f"cannot read image {path} ({safeio.image_problem(e)}); remove or replace it") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _walk(path: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under path; a symlink that leads outside path is refused by name.

    Symlinked folders are not entered: one that stays inside is walked under its real name anyway."""
    top = path.resolve()
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(top):
                    raise GenlabError(f"{p} is a symlink to {target}, outside dataset.path={path}: refused (genlab "
                                      "reads only files inside the folder); copy the file in or remove the link")
        for n in filenames:
            p = Path(dirpath) / n
            if not p.is_file():
                continue  # a dangling link, a socket ...
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return sorted(images), sorted(others)


def list_images(path: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Image files under `path`; labels from first-level subfolders when every image is in one."""
    files = _walk(path)[0]
    subdirs = sorted({p.relative_to(path).parts[0] for p in files if len(p.relative_to(path).parts) > 1})
    if files and subdirs and all(len(p.relative_to(path).parts) > 1 for p in files) and len(subdirs) > 1:
        index = {d: i for i, d in enumerate(subdirs)}
        return files, [index[p.relative_to(path).parts[0]] for p in files], subdirs
    return files, None, None


def _folder_images(cfg) -> tuple[Path, list[Path], list[int] | None, list[str] | None]:
    """The folder and its image files (up to dataset.limit), or one line saying what is missing."""
    if not cfg.path:
        raise GenlabError("dataset=image_folder needs dataset.path=/path/to/images")
    path = Path(os.path.expanduser(str(cfg.path)))
    if not path.is_dir():
        raise GenlabError(f"dataset.path={path} is not a folder; point it at a folder of images")
    files, labels, names = list_images(path)
    if not files:
        others = _walk(path)[1]
        seen = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise GenlabError(f"no images found under {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}{seen})")
    if cfg.limit is not None:
        files, labels = files[:cfg.limit], (labels[:cfg.limit] if labels else None)
    return path, files, labels, names


# Before a run, every image is opened and verified (no decoding) up to this many; the rest at load.
VERIFY_MAX = 5000


def verify_image(path: Path, max_pixels: int | None) -> None:
    """An image's header, size and (PNG) checksums, without decoding it; a JPEG that does not end in
    its end-of-image marker is decoded to find out whether it is truncated."""
    from PIL import Image

    try:
        with safeio.own_pixel_limit():
            with Image.open(path) as im:
                safeio.check_pixels(path, im.size, max_pixels)
                fmt = im.format
                im.verify()
            if fmt == "JPEG" and safeio.tail(path, 2) != b"\xff\xd9":
                with Image.open(path) as im:
                    im.load()
    except GenlabError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise GenlabError(f"cannot read image {path} ({safeio.image_problem(e)}); remove or replace it") from None


def check_folder(cfg) -> None:
    """Before a run starts: the folder exists and holds readable images (headers and checksums only)."""
    for p in _folder_images(cfg)[1][:VERIFY_MAX]:
        verify_image(p, cfg.max_pixels)


def image_folder(cfg, seed: int = 0) -> Data:
    """Every image under dataset.path, resized (shorter side) and centre-cropped to image_size."""
    path, files, labels, names = _folder_images(cfg)
    channels, size = cfg.channels or 3, cfg.image_size or 64
    x = torch.stack([_load_image(p, channels, size, cfg.max_pixels) for p in files])
    y = torch.tensor(labels, dtype=torch.int64) if labels else None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(20_000 + seed))
    n_test = int(round(len(x) * cfg.test_fraction)) if len(x) > 1 else 0
    test, train = perm[:n_test], perm[n_test:]
    if n_test == 0:  # too few images to hold any out: evaluate on the training images
        test = train
    return Data(path.name, "image", x[train], y[train] if y is not None else None, x[test],
                y[test] if y is not None else None, num_classes=len(names) if names else None,
                class_names=names, seed=seed, binarize=cfg.binarize)


image_folder.check = check_folder
image_folder.spec = lambda cfg: Spec("image", (cfg.channels or 3, cfg.image_size or 64, cfg.image_size or 64),
                                     None, binarized=cfg.binarize is not None)
