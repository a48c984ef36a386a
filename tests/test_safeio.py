"""Readers of files genlab did not write: crafted files never run code, foreign ones are one line naming them."""

from __future__ import annotations

import io
import logging
import pickle
import pickletools

import numpy as np
import pytest
import torch

from genlab import safeio
from genlab.data.images import read_cifar_batch
from genlab.errors import GenlabError
from tests.test_bad_inputs import _RunsCode, cifar_batch


def test_a_crafted_pickle_runs_code_under_pickle_but_not_under_the_reader(tmp_path):
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({"data": _RunsCode(tmp_path / "ran")}, protocol=2))
    with pytest.raises(safeio.UnsafeFile, match=r"data_batch_1 asks to run posix.system while being read: refused"):
        safeio.read_array_pickle(evil)
    assert not (tmp_path / "ran").exists()
    pickle.loads(evil.read_bytes())  # the control: the same file does run code when unpickled plainly
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_read_back_exactly(protocol, tmp_path):
    batch = cifar_batch(n=7, seed=3)
    path = tmp_path / f"batch{protocol}"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_batch(path)
    assert x.dtype == np.uint8 and x.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(x.reshape(7, -1), batch["data"])
    assert y.tolist() == batch["labels"]


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as CIFAR-10's Python 2 files are: str keys, the array's bytes as a raw str."""
    def s(text: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(text)]) + text

    rows, cols = data.shape
    dtype = b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
             + b"(K\x01M" + rows.to_bytes(2, "little") + b"M" + cols.to_bytes(2, "little") + b"\x86" + dtype
             + b"\x89T" + len(data.tobytes()).to_bytes(4, "little") + data.tobytes() + b"tb")
    items = b"".join(b"K" + bytes([v]) for v in labels)
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](" + items + b"eu."


def test_a_python2_batch_as_cifar10_ships_it_reads(tmp_path):
    data = (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072)
    path = tmp_path / "py2"
    path.write_bytes(_py2_batch(data, [1, 2]))
    assert pickle.loads(path.read_bytes(), encoding="latin1")["labels"] == [1, 2]  # a well-formed pickle
    x, y = read_cifar_batch(path)
    assert y.tolist() == [1, 2]
    np.testing.assert_array_equal(x.reshape(2, -1), data)


class _Reduce:
    """Pickles as the given callable applied to args."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_an_array_that_claims_more_memory_than_the_file_holds_is_refused(tmp_path):
    from numpy._core.multiarray import _reconstruct

    path = tmp_path / "bomb"
    # numpy's own form with a huge shape for _reconstruct: the file would allocate 1 TB before its state.
    path.write_bytes(pickle.dumps(_Reduce(_reconstruct, (np.ndarray, (10**12,), b"b")), protocol=2))
    assert b"_reconstruct" in path.read_bytes()
    with pytest.raises(GenlabError, match="corrupt or not a pickle .*arguments numpy never writes"):
        safeio.read_array_pickle(path)
    # Calling ndarray itself (NEWOBJ with a shape) is refused too.
    path.write_bytes(b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85\x81.")  # ndarray((10**12,))
    assert any(op.name == "NEWOBJ" for op, _, _ in pickletools.genops(path.read_bytes()))
    with pytest.raises(GenlabError, match="numpy.ndarray called directly"):
        safeio.read_array_pickle(path)


def test_reference_cache_refuses_a_crafted_file_and_recomputes(tmp_path, caplog):
    from genlab.metrics.refcache import ReferenceCache

    cache = ReferenceCache(tmp_path)
    value = {"mu": torch.arange(3.0)}
    assert cache.get("stats", {"n": 1}, lambda: value) is value
    (path,) = tmp_path.glob("stats-*.pt")
    torch.save({"key": {"n": 1}, "value": _RunsCode(tmp_path / "ran")}, path)
    fresh = ReferenceCache(tmp_path)
    with caplog.at_level(logging.WARNING, "genlab"):
        got = fresh.get("stats", {"n": 1}, lambda: {"mu": torch.ones(3)})
    assert torch.equal(got["mu"], torch.ones(3)) and fresh.computed == 1
    assert "contains objects other than tensors (posix.system): refused" in caplog.text and str(path) in caplog.text
    assert not (tmp_path / "ran").exists()
    torch.save([1, 2, 3], path)  # readable, but not an entry: recomputed, not a traceback
    assert torch.equal(ReferenceCache(tmp_path).get("stats", {"n": 1}, lambda: value)["mu"], value["mu"])


def test_feature_network_cache_refuses_a_crafted_file_and_retrains(tmp_path, mnist_root, caplog):
    from genlab import data as data_lib
    from genlab.metrics import featurenet as fnet
    from tests.conftest import compose

    data = data_lib.build(compose(["dataset=mnist", f"dataset.root={mnist_root}"]).dataset)
    recipe = fnet.recipe_for(data, epochs=1)
    path = tmp_path / f"{recipe.id}.pt"
    torch.save({"digest": recipe.digest(), "weights": _RunsCode(tmp_path / "ran"), "test_accuracy": 1.0}, path)
    with caplog.at_level(logging.WARNING, "genlab"):
        net = fnet.load_or_train(data, recipe, tmp_path)
    assert "feature network" in caplog.text and "refused" in caplog.text and not (tmp_path / "ran").exists()
    assert net.test_accuracy < 1.0  # trained now, not the file's claim
    torch.save({"digest": recipe.digest(), "weights": {"nope": torch.zeros(1)}, "test_accuracy": 1.0}, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "genlab"):
        fnet.load_or_train(data, recipe, tmp_path)
    assert "has the recipe's digest but not its weights" in caplog.text


def test_inception_weights_are_checked_before_torch_fidelity_reads_them(tmp_path):
    from genlab.metrics.featurenet import InceptionNet

    evil = tmp_path / "pt_inception.pth"
    torch.save({"w": _RunsCode(tmp_path / "ran")}, evil)
    with pytest.raises(safeio.UnsafeFile, match="eval.inception_weights .* contains objects other than tensors"):
        InceptionNet(str(evil))
    assert not (tmp_path / "ran").exists()
    torch.save([torch.zeros(1)], evil)
    with pytest.raises(GenlabError, match="is not a state dict of tensors"):
        InceptionNet(str(evil))


def test_npz_reader_checks_names_dtypes_and_ranks(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((2, 4, 4, 1), np.uint8))
    assert safeio.read_npz(good, {"images": (("u",), 4)})["images"].shape == (2, 4, 4, 1)
    with pytest.raises(GenlabError, match="has no array 'points' \\(it holds images\\)"):
        safeio.read_npz(good, {"points": (("f",), 2)})
    with pytest.raises(GenlabError, match="expected 3 dimensions"):
        safeio.read_npz(good, {"images": (("u",), 3)})
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    (tmp_path / "plain.npy.npz").write_bytes(buf.getvalue())  # an .npy named .npz
    with pytest.raises(GenlabError, match="plain.npy.npz"):
        safeio.read_npz(tmp_path / "plain.npy.npz", {"images": (("u",), 4)})
