"""The catalogue of bad input: each case is one `genlab: error:` line, exit status 2, no traceback, and
not a file or folder created or changed (no run folder left behind).

The cases run in this process through `genlab.cli.main` (what the console script calls): the
pre-flight checks answer before Hydra starts, so each takes a fraction of a second.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab import cli
from genlab.commands.train import train
from tests.conftest import compose, make_mnist, run_cli, write_idx

TOY = ["dataset=grid25", "trainer=debug", "trainer.progress=false", "dataset.n_train=500", "dataset.n_test=100"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder with two finished runs, broken checkpoints, image folders and a plain file."""
    root = tmp_path_factory.mktemp("lab")
    train(compose(["model=gan", *TOY, "trainer.max_steps=2"]), root / "gan_run")
    (root / "corrupt.pt").write_bytes(os.urandom(2000))
    good = (root / "gan_run" / "checkpoints" / "last.pt").read_bytes()
    (root / "truncated.pt").write_bytes(good[: len(good) // 3])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": 1, "model": Evil()}, root / "evil.pt")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    (root / "empty_folder").mkdir()
    (root / "folder.png").mkdir()
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("not an image")
    (root / "bad_images").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "bad_images" / "ok.png")
    (root / "bad_images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / "a_file").write_text("a regular file")
    make_bad_files(root)
    return root


MARKER = "code_ran"  # a crafted file that runs code creates this file in the lab: it must never appear


class _RunsCode:
    """Pickles to a call of os.system, what a crafted data file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cifar_batch(n: int = 10, seed: int = 0) -> dict:
    """A CIFAR-10 python batch as the dataset ships it (a dict of data, labels, filenames)."""
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch", "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


def write_cifar(root: Path, first=None) -> Path:
    """root/cifar-10-batches-py with six tiny batches; `first` replaces data_batch_1's content."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        with open(d / name, "wb") as f:
            pickle.dump(first if (i == 0 and first is not None) else cifar_batch(seed=i), f, protocol=2)
    return root


def tiny_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with one row of data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_bad_files(root: Path) -> None:
    """Dataset files whose content is not what they claim, each in its own folder of the lab."""
    from PIL import Image

    write_cifar(root / "cifar_evil", first=_RunsCode(root / MARKER))
    write_cifar(root / "cifar_shape", first={**cifar_batch(), "data": np.zeros((10, 100), np.uint8)})
    write_cifar(root / "cifar_labels", first={**cifar_batch(), "labels": [42] * 10})
    write_cifar(root / "cifar_list", first=[1, 2, 3])
    write_cifar(root / "cifar_junk").joinpath("cifar-10-batches-py", "test_batch").write_bytes(os.urandom(500))
    raw = "MNIST/raw/train-images-idx3-ubyte.gz"
    for name in ("idx_magic", "idx_truncated", "idx_dims", "idx_count"):
        make_mnist(root / name)
    with gzip.open(root / "idx_magic" / raw, "wb") as f:
        f.write(b"\x08\x03\x00\x00" + os.urandom(100))
    body = (root / "idx_truncated" / raw).read_bytes()
    (root / "idx_truncated" / raw).write_bytes(body[: len(body) // 2])
    write_idx(root / "idx_dims" / raw, np.zeros((64, 28 * 28), np.uint8))
    write_idx(root / "idx_count" / raw, np.zeros((63, 28, 28), np.uint8))
    make_mnist(root / "idx_plain")
    plain = root / "idx_plain" / "MNIST" / "raw"
    for p in plain.glob("*.gz"):  # uncompressed files, the last 7 bytes of one image file missing
        p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    plain.joinpath("t10k-images-idx3-ubyte").write_bytes(plain.joinpath("t10k-images-idx3-ubyte").read_bytes()[:-7])
    for name in ("bomb", "escape", "truncated_jpeg", "text_as_jpeg", "one_image"):
        (root / name).mkdir()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / name / "ok.png")
    (root / "bomb" / "huge.png").write_bytes(tiny_png(60000, 60000))
    (root / "outside.png").write_bytes((root / "bomb" / "ok.png").read_bytes())
    (root / "escape" / "link.png").symlink_to(root / "outside.png")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    (root / "truncated_jpeg" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "text_as_jpeg" / "notes.jpg").write_text("these are my notes, not a photo")
    (root / "garbage.npz").write_bytes(b"PK\x03\x04" + os.urandom(300))
    np.savez(root / "objects.npz", images=np.array([{"a": 1}], dtype=object))
    with open(root / "single.npz", "wb") as f:
        np.save(f, np.zeros((2, 8, 8, 3), np.uint8))
    np.savez(root / "floats.npz", images=np.zeros((2, 8, 8, 3), np.float32))


RUN = "gan_run"
CASES = {
    # ---- train: config values --------------------------------------------------------------------
    "unknown model": (["train", "model=nope"], "unknown model 'nope'"),
    "unknown dataset": (["train", "dataset=nope"], "unknown dataset 'nope'"),
    "unknown optimizer": (["train", "optimizer=adamw"], "unknown optimizer 'adamw'"),
    "unknown trainer key": (["train", *TOY, "trainer.nope=1"], "trainer.nope"),
    "mistyped model value": (["train", "model=gan", *TOY, "model.z_dim=abc"], "z_dim"),
    "negative max_steps": (["train", *TOY, "trainer.max_steps=-1"], "trainer.max_steps must be >= 0"),
    "zero batch size": (["train", *TOY, "trainer.batch_size=0"], "trainer.batch_size must be >= 1"),
    "unknown precision": (["train", *TOY, "trainer.precision=8"], "trainer.precision must be one of"),
    "best_metric without eval": (["train", *TOY, "trainer.best_metric=fid"], "needs trainer.eval_every > 0"),
    "unknown eval metric": (["train", *TOY, "trainer.eval_every=2", "trainer.eval_metrics=[bogus]"],
                            "unknown metric bogus"),
    "zero threads": (["train", *TOY, "trainer.num_threads=0"], "trainer.num_threads must be >= 1"),
    "unknown command": (["tarin", "model=gan"], "unknown command 'tarin'"),
    # ---- train: device ---------------------------------------------------------------------------
    "cuda without cuda": (["train", *TOY, "trainer.device=cuda"], "trainer.device=cuda"),
    "cuda:99": (["train", *TOY, "trainer.device=cuda:99"], "trainer.device=cuda:99"),
    "unknown device": (["train", *TOY, "trainer.device=tpu"], "trainer.device must be"),
    # ---- train: optimizer arguments --------------------------------------------------------------
    "beta out of range": (["train", "model=gan", *TOY, "optimizer.betas=[1.5,0.999]"], "Invalid beta parameter"),
    "betas given to sgd": (["train", "model=gan", *TOY, "optimizer=sgd", "optimizer.betas=[0.5,0.9]"],
                           "optimizer.betas is not an argument of torch.optim.SGD"),
    "momentum given to adam": (["train", "model=gan", *TOY, "optimizer.momentum=0.9"],
                               "optimizer.momentum is not an argument of torch.optim.Adam"),
    "negative lr": (["train", *TOY, "optimizer.lr=-1"], "optimizer.lr must be > 0"),
    "lr not a number": (["train", *TOY, "optimizer.lr=abc"], "optimizer.lr"),
    "negative eps": (["train", "model=gan", *TOY, "optimizer.eps=-1"], "Invalid epsilon"),
    "negative rmsprop alpha": (["train", "model=wgan", *TOY, "optimizer.alpha=-1"], "Invalid alpha"),
    # ---- train: data -----------------------------------------------------------------------------
    "mnist missing offline": (["train", "dataset=mnist", "dataset.root=nodata", "dataset.download=false"],
                              "dataset mnist not found"),
    "cifar10 missing offline": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=nodata",
                                 "dataset.download=false"], "dataset cifar10 not found"),
    "class out of range": (["train", "dataset=fashion_mnist", "dataset.classes=[42]"], "has classes 0..9"),
    "empty class list": (["train", "dataset=fashion_mnist", "dataset.classes=[]"], "non-empty list"),
    "image_folder without path": (["train", "model=dcgan", "dataset=image_folder"], "needs dataset.path"),
    "image_folder missing": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=missing"],
                             "is not a folder"),
    "image_folder is a file": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=a_file"],
                               "is not a folder"),
    "image_folder empty": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=empty_folder"],
                           "no images found"),
    "image_folder without images": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=no_images"],
                                    "no images found"),
    "image_folder corrupt image": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=bad_images"],
                                   "cannot read image"),
    # ---- train: dataset files that are not what they claim (read before any run folder) ------------
    "cifar10 batch runs code": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=cifar_evil",
                                 "dataset.download=false"], "asks to run posix.system while being read: refused"),
    "cifar10 batch of another shape": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=cifar_shape",
                                        "dataset.download=false"], "'data' is uint8 (10, 100), not uint8 N x 3072"),
    "cifar10 labels out of range": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=cifar_labels",
                                     "dataset.download=false"], "'labels' are not class numbers 0..9"),
    "cifar10 batch of junk": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=cifar_junk",
                               "dataset.download=false"], "test_batch is corrupt or not a pickle"),
    "cifar10 batch not a dict": (["train", "model=dcgan", "dataset=cifar10", "dataset.root=cifar_list",
                                  "dataset.download=false"], "it holds a list, not a dict"),
    "idx bad magic": (["train", "dataset=mnist", "dataset.root=idx_magic", "dataset.download=false"],
                      "train-images-idx3-ubyte.gz is not an IDX file (bad magic number"),
    "idx truncated gzip": (["train", "dataset=mnist", "dataset.root=idx_truncated", "dataset.download=false"],
                           "train-images-idx3-ubyte.gz is truncated or corrupt"),
    "idx truncated body": (["train", "dataset=mnist", "dataset.root=idx_plain", "dataset.download=false"],
                           "t10k-images-idx3-ubyte has 25097 bytes but its header 32x28x28 needs 25104 (truncated)"),
    "idx not 28x28 images": (["train", "dataset=mnist", "dataset.root=idx_dims", "dataset.download=false"],
                             "holds 64x784 values, not N images of 28x28"),
    "idx images and labels differ": (["train", "dataset=mnist", "dataset.root=idx_count", "dataset.download=false"],
                                     "has 63 images but"),
    "image_folder pixel bomb": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=bomb"],
                                "huge.png is 60000x60000 = 3600000000 pixels, over dataset.max_pixels=16777216"),
    "image_folder over a lowered limit": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=one_image",
                                           "dataset.max_pixels=10"], "ok.png is 8x8 = 64 pixels, over dataset.max_pixels=10"),
    "max_pixels not a number": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=bomb",
                                 "dataset.max_pixels=many"], "max_pixels"),
    "unpaired domain symlink out": (["train", "model=cyclegan", "dataset=unpaired_folders", "dataset.domain_a.path=escape",
                                     "dataset.domain_b.path=text_as_jpeg"], "link.png is a symlink to"),
    "image_folder symlink out": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=escape"],
                                 "link.png is a symlink to"),
    "image_folder truncated jpeg": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=truncated_jpeg"],
                                    "cut.jpg (OSError: image file is truncated"),
    "image_folder text named .jpg": (["train", "model=dcgan", "dataset=image_folder", "dataset.path=text_as_jpeg"],
                                     "notes.jpg (not an image PIL can identify)"),
    "unpaired without paths": (["train", "model=cyclegan", "dataset=unpaired_folders"],
                               "needs dataset.domain_a.path"),
    # ---- train: resume ---------------------------------------------------------------------------
    "resume missing": (["train", *TOY, "trainer.resume=missing"], "no checkpoint at"),
    "resume corrupt": (["train", *TOY, "trainer.resume=corrupt.pt"], "not a genlab checkpoint"),
    "resume truncated": (["train", *TOY, "trainer.resume=truncated.pt"], "corrupt, truncated"),
    "resume unsafe": (["train", *TOY, "trainer.resume=evil.pt"], "contains objects other than tensors"),
    "first stage unsafe": (["train", "model=vqvae_prior", "model.vqvae_run=evil.pt", "dataset=mnist"],
                           "checkpoint evil.pt contains objects other than tensors (posix.system): refused"),
    "resume foreign": (["train", *TOY, "trainer.resume=foreign.pt"], "is not a genlab checkpoint"),
    "resume other model": (["train", f"trainer.resume={RUN}", "model=wgan_gp", *TOY], "is of model=gan"),
    "resume other shape": (["train", f"trainer.resume={RUN}", "model=gan", *TOY, "model.z_dim=3"],
                           "does not match this model"),
    "resume other data": (["train", f"trainer.resume={RUN}", "model=gan", *TOY, "dataset=toy1d"],
                          "resume with the same dataset"),
    "resume other optimizer": (["train", f"trainer.resume={RUN}", "model=gan", *TOY, "optimizer=sgd"],
                               "resume with the same optimizer"),
    # ---- train: output folder --------------------------------------------------------------------
    "run dir under a file": (["train", *TOY, "hydra.run.dir=a_file/run"], "a_file is a file, not a folder"),
    "run dir is a file": (["train", *TOY, "hydra.run.dir=a_file"], "is a file"),
    "run dir in /proc": (["train", *TOY, "hydra.run.dir=/proc/genlab_run"], "cannot be written"),
    # ---- sweeps: every value is checked before job 0 ---------------------------------------------
    "sweep bad device": (["train", "-m", *TOY, "trainer.device=cpu,cuda:99"], "trainer.device=cuda:99"),
    "sweep bad lr": (["train", "-m", *TOY, "optimizer.lr=0.001,-1"], "optimizer.lr must be > 0"),
    # (no dataset.n_train here: on mnist it is now an error of its own, no longer silently ignored)
    "sweep missing dataset": (["train", "-m", "trainer=debug", "trainer.progress=false", "dataset=grid25,mnist",
                               "dataset.root=nodata",
                               "dataset.download=false"], "dataset mnist not found"),
    "sweep unknown model": (["train", "-m", *TOY, "model=gan,nope"], "unknown model 'nope'"),
    "sweep sgd with betas": (["train", "-m", "model=gan", *TOY, "optimizer=adam,sgd", "optimizer.betas=[0.5,0.9]"],
                             "not an argument of torch.optim.SGD"),
    "sweep dir under a file": (["train", "-m", *TOY, "seed=0,1", "hydra.sweep.dir=a_file/sweep"], "is a file"),
    # ---- sample ----------------------------------------------------------------------------------
    "sample without run": (["sample"], "needs run="),
    "sample missing run": (["sample", "run=missing"], "no checkpoint at"),
    "sample corrupt": (["sample", "run=corrupt.pt"], "not a genlab checkpoint"),
    "sample unsafe": (["sample", "run=evil.pt"], "contains objects other than tensors"),
    "sample bad suffix": (["sample", f"run={RUN}", "out=x.jpg"], "must end in .png"),
    "sample out under a file": (["sample", f"run={RUN}", "out=a_file/x.png"], "a_file is a file"),
    "sample out in /proc": (["sample", f"run={RUN}", "out=/proc/x.npz"], "cannot be written"),
    "sample out is a folder": (["sample", f"run={RUN}", "out=folder.png"], "is a folder"),
    "sample zero samples": (["sample", f"run={RUN}", "num_samples=0"], "num_samples must be >= 1"),
    "sample unknown mode": (["sample", f"run={RUN}", "mode=zoom"], "mode=zoom is unknown"),
    "sample labels unconditional": (["sample", f"run={RUN}", "labels=3"], "class-conditional"),
    "sample temperature gan": (["sample", f"run={RUN}", "temperature=0.5"], "temperature= applies to flows"),
    "sample no best.pt": (["sample", f"run={RUN}", "checkpoint=best"], "no checkpoint at"),
    "sample cuda:99": (["sample", f"run={RUN}", "device=cuda:99"], "trainer.device=cuda:99"),
    "sample unknown device": (["sample", f"run={RUN}", "device=tpu"], "device=tpu is not a device"),
    "sample count not a number": (["sample", f"run={RUN}", "num_samples=abc"], "num_samples must be a whole number"),
    "sample zero batch": (["sample", f"run={RUN}", "batch_size=0"], "batch_size must be >= 1"),
    "sample zero nrow": (["sample", f"run={RUN}", "nrow=0"], "nrow must be >= 1"),
    "sample interp one step": (["sample", f"run={RUN}", "mode=interp", "path_length=1"], "path_length must be >= 2"),
    "sample steps on a gan": (["sample", f"run={RUN}", "steps=10"], "steps= sets a diffusion sampler"),
    "sample garbage npz": (["sample", f"run={RUN}", "input=garbage.npz"], "garbage.npz is corrupt or not an NPZ file"),
    "sample pickled npz": (["sample", f"run={RUN}", "input=objects.npz"], "objects.npz holds pickled objects: refused"),
    "sample npy as npz": (["sample", f"run={RUN}", "input=single.npz"], "single.npz is a single .npy array"),
    "sample float npz": (["sample", f"run={RUN}", "input=floats.npz"], "array 'images' is float32 of shape (2, 8, 8, 3)"),
    "sample bad truncation": (["sample", f"run={RUN}", "truncation=-1"], "truncation must be > 0"),
    # ---- eval ------------------------------------------------------------------------------------
    "eval without run": (["eval"], "needs run="),
    "eval missing run": (["eval", "run=missing"], "no checkpoint at"),
    "eval corrupt": (["eval", "run=corrupt.pt"], "not a genlab checkpoint"),
    "eval one sample": (["eval", f"run={RUN}", "num_samples=1"], "num_samples must be >= 2"),
    "eval out in /proc": (["eval", f"run={RUN}", "out=/proc/x.json"], "cannot be written"),
    "eval out under a file": (["eval", f"run={RUN}", "out=a_file/e.json"], "a_file is a file"),
    "eval unknown device": (["eval", f"run={RUN}", "device=tpu"], "device=tpu is not a device"),
    "eval zero batch": (["eval", f"run={RUN}", "batch_size=0"], "batch_size must be >= 1"),
    "eval unknown metric": (["eval", f"run={RUN}", "metrics=[nonsense]"], "nonsense"),
    "eval no best.pt": (["eval", f"run={RUN}", "checkpoint=best"], "no checkpoint at"),
}


@pytest.fixture(autouse=True)
def _keep_logging(keep_logging):
    """Every case runs a Hydra app in this process (see conftest.keep_logging)."""
    yield


def snapshot(root: Path) -> dict:
    """Every file (size, mtime) and folder under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, lab, monkeypatch, capsys):
    args, expected = CASES[name]
    if name == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(lab)
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    monkeypatch.delenv("GENLAB_OUTPUTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["genlab"])
    before = snapshot(lab)
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("genlab: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(lab) == before
    assert not (lab / MARKER).exists()  # no code from a crafted file ran


def test_the_catalogue_is_large():
    assert len(CASES) >= 100  # 81 before the file-content cases (issue 16)


def test_failed_download_reason_is_the_innermost_cause():
    from genlab.data.images import _download_reason

    try:
        try:
            raise OSError("[Errno -2] Name or service not known")
        except OSError:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
                               "<urlopen error [Errno -2] Name or service not known>\n")
    except RuntimeError as e:
        assert _download_reason(e) == "[Errno -2] Name or service not known"
    torchvision_style = RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n"
                                     "<urlopen error [Errno -2] Name or service not known>\n")
    assert _download_reason(torchvision_style) == "urlopen error [Errno -2] Name or service not known"


def test_bad_input_through_the_console_script(lab):
    """One case end to end in a subprocess: the same line, no traceback, no folder."""
    before = snapshot(lab)
    r = run_cli(["train", *TOY, "trainer.device=cuda:99"], lab)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error: trainer.device=cuda:99 but "), r.stderr
    assert snapshot(lab) == before


def test_optimizer_switch_keeps_each_optimizers_own_settings():
    cfg = compose(["model=wgan_gp", "optimizer=sgd"])
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.lr == 1e-2 and cfg.optimizer.betas is None
    cfg = compose(["model=wgan_gp"])
    assert cfg.optimizer.lr == 1e-4 and list(cfg.optimizer.betas) == [0.0, 0.9]  # the paper's Adam settings
    cfg = compose(["model=wgan_gp", "optimizer.lr=3e-4"])
    assert cfg.optimizer.lr == 3e-4 and list(cfg.optimizer.betas) == [0.0, 0.9]  # the command line wins
    cfg = compose(["model=wgan", "optimizer=adam"])
    assert cfg.optimizer.lr == 2e-4 and list(cfg.optimizer.betas) == [0.5, 0.999]  # RMSprop's 5e-5 stays there
    cfg = compose(["model=wgan"])
    assert cfg.optimizer._target_ == "torch.optim.RMSprop" and cfg.optimizer.lr == 5e-5


def test_infogan_paper_per_network_lr_applies_to_adam_only():
    from genlab.engine.trainer import build_optimizer

    p = [torch.zeros(1, requires_grad=True)]
    adam = build_optimizer(compose(["model=infogan"]).optimizer, p, "generator")
    assert adam.param_groups[0]["lr"] == 1e-3
    sgd = build_optimizer(compose(["model=infogan", "optimizer=sgd"]).optimizer, p, "generator")
    assert sgd.param_groups[0]["lr"] == 1e-2
    mine = build_optimizer(compose(["model=infogan", "+optimizer.per_network.generator.lr=5e-4"]).optimizer, p,
                           "generator")
    assert mine.param_groups[0]["lr"] == 5e-4




@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 4 MiB (tmpfs), for as long as the test runs; skipped where mounting is not allowed."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Write to `disk` until it is full (the run may have filled it already: then not even the file opens)."""
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC, e


@pytest.mark.slow
def test_a_full_disk_with_tensorboard_on_is_one_line_and_keeps_the_checkpoint(small_disk, tmp_path):
    import signal
    import subprocess
    import time

    from genlab.engine import checkpoint as ckpt
    from tests.conftest import REPO

    run = small_disk / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    p = subprocess.Popen([sys.executable, "-m", "genlab", "train", "model=gan", *TOY, "trainer.num_threads=1",
                          "trainer.max_steps=1000000", "trainer.log_every=1", "trainer.sample_every=0",
                          "trainer.checkpoint_every=500", f"hydra.run.dir={run}"], cwd=tmp_path, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "last.pt").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # the status record after last.pt is written too
        fill(small_disk)  # from now on every write fails: the next TensorBoard events first
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]  # [date][genlab][INFO] log lines
    assert p.returncode == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"genlab: error: cannot write {run}/"), err
    assert "No space left on device" in lines[0] and "TensorBoard events" in lines[0], err
    assert "Traceback" not in err and "Logging error" not in err
    assert ckpt.load(run / "checkpoints" / "last.pt")["step"] % 500 == 0  # intact: the last complete one
