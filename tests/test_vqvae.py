"""VQ-VAE and its PixelCNN prior: the straight-through estimator, the codebook (assignment, EMA update,
perplexity), the code PixelCNN's causality, the two-stage runs, exact resume and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.commands.train import train
from genlab.data import Spec
from genlab.errors import GenlabError
from genlab.models.vqvae import VQVAE, VectorQuantizer, perplexity, straight_through
from genlab.nets.pixelcnn import CategoricalPixelCNN
from tests.conftest import TINY, assert_same_state, compose, run_cli

SMALL = ["model.codebook_size=16", "model.code_dim=4", "model.hidden=8", "model.n_res_blocks=1", "model.eval_limit=16"]
PRIOR = ["model.n_layers=2", "model.hidden=8", "model.eval_limit=16"]


def vqvae(*extra):
    from genlab.config import build_model

    return build_model(compose(["model=vqvae", "dataset=mnist", *SMALL, *extra]), Spec("image", (1, 28, 28)))


def test_straight_through_is_z_q_forward_and_the_identity_backward():
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q = torch.randn(2, 4, 3, 3)
    out = straight_through(z_e, z_q)
    torch.testing.assert_close(out, z_q)
    g = torch.randn_like(z_q)
    (out * g).sum().backward()
    assert torch.equal(z_e.grad, g)


def test_the_encoder_receives_the_decoders_input_gradient():
    model = vqvae()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    z_e, codes = model.encode(x)
    z_e.retain_grad()
    st = straight_through(z_e, model.quantized(codes))
    st.retain_grad()
    (-model.log_px_z(x, model.decoder(st)).sum()).backward()
    assert st.grad.abs().sum() > 0 and torch.equal(z_e.grad, st.grad)


def test_assignment_is_the_nearest_code():
    q = VectorQuantizer(7, 3)
    z = torch.randn(5, 4, 3)
    expected = torch.cdist(z.reshape(-1, 3), q.codebook).argmin(1).view(5, 4)
    assert torch.equal(q.assign(z), expected)
    assert torch.equal(q.lookup(expected), q.codebook[expected])


def test_ema_update_against_a_hand_computation():
    q = VectorQuantizer(3, 2, ema_decay=0.9, epsilon=0.01)
    q.ema_count.copy_(torch.tensor([2.0, 1.0, 0.0]))
    q.ema_sum.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, -2.0]])
    codes = torch.tensor([0, 0, 1])
    q.ema_update(z, codes)
    # N = 0.9 N + 0.1 n with n = (2, 1, 0); m = 0.9 m + 0.1 sum of the assigned vectors
    count = [0.9 * 2 + 0.2, 0.9 * 1 + 0.1, 0.0]
    sums = [[0.9 * 2 + 0.1 * 4, 0.1 * 2], [0.0, 0.9 - 0.2], [4.5, 4.5]]
    n = sum(count)
    smoothed = [(c + 0.01) / (n + 3 * 0.01) * n for c in count]
    expected = torch.tensor([[s / smoothed[i] for s in sums[i]] for i in range(3)])
    torch.testing.assert_close(q.ema_count, torch.tensor(count))
    torch.testing.assert_close(q.ema_sum, torch.tensor(sums))
    torch.testing.assert_close(q.codebook, expected)


def test_ema_codebook_is_a_buffer_and_the_loss_codebook_a_parameter():
    assert "quantizer.codebook" in dict(vqvae().named_parameters())
    ema = vqvae("model.ema_decay=0.99")
    assert "quantizer.codebook" not in dict(ema.named_parameters()) and "quantizer.codebook" in ema.state_dict()


def test_perplexity_counts_the_effective_codes():
    assert float(perplexity(torch.arange(8).repeat(5), 8)) == pytest.approx(8)
    assert float(perplexity(torch.full((20,), 3), 8)) == pytest.approx(1)
    assert float(perplexity(torch.tensor([0, 0, 1, 1]), 8)) == pytest.approx(2)


def test_the_elbo_under_the_uniform_prior_is_decoder_nll_plus_code_bits():
    model = vqvae().eval()
    x = torch.rand(4, 1, 28, 28).mul(255).round().div(127.5).sub(1)
    from genlab.types import Batch

    t = model.eval_terms(Batch(x))
    torch.testing.assert_close(t["neg_elbo"], t["decoder_nll"] + 49 * math.log(16))
    assert t["codes"].shape == (4, 49)


def test_code_pixelcnn_is_causal_in_raster_order():
    net = CategoricalPixelCNN(5, (4, 4), n_layers=3, hidden=8).double()
    codes = torch.randint(5, (2, 4, 4))
    base = net(codes)
    for pos in (0, 5, 15):
        i, j = divmod(pos, 4)
        changed = codes.clone()
        changed[:, i, j] = (changed[:, i, j] + 1) % 5
        diff = (net(changed) - base).abs().sum((0, 1)).flatten()
        assert torch.all(diff[: pos + 1] == 0)  # earlier positions and the position itself see nothing of it
        if pos < 15:
            assert diff[pos + 1:].sum() > 0
    lp = net.log_prob(codes)
    torch.testing.assert_close(lp, torch.log_softmax(base, 1).gather(1, codes.unsqueeze(1)).flatten(1).sum(1))


# ----------------------------------------------------------------------------- runs


def cfg(root, model, steps=4, extra=()):
    over = SMALL if model == "vqvae" else PRIOR
    return compose(["dataset=mnist", f"dataset.root={root}", *TINY, "trainer.eval_every=2", "trainer.eval_metrics=[nll]",
                    "trainer.eval_samples=2", f"trainer.max_steps={steps}", f"model={model}", *over, *extra])


def history(run):
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


@pytest.fixture
def vqvae_run(mnist_root, tmp_path):
    run = tmp_path / "vqvae"
    train(cfg(mnist_root, "vqvae"), run)
    return run


@pytest.mark.parametrize("extra", [[], ["model.ema_decay=0.9"]])
def test_vqvae_trains_reports_and_resumes_bit_identically(extra, mnist_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg(mnist_root, "vqvae", 6, extra), a)
    train(cfg(mnist_root, "vqvae", 3, extra), b)
    train(cfg(mnist_root, "vqvae", 6, [*extra, f"trainer.resume={b}"]), b)
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    assert_same_state(sa, torch.load(b / "checkpoints" / "last.pt", weights_only=True))
    if extra:
        assert sa["model"]["quantizer.ema_count"].sum() > 0
    last = history(a)[-1]
    assert last["codes_used"] + last["dead_codes"] == 16 and 1 <= last["code_perplexity"] <= last["codes_used"]
    assert last["test_elbo_bits_per_dim"] == pytest.approx(
        last["test_decoder_bits_per_dim"] + 49 * math.log2(16) / 784)
    assert last["code_prior"] == "uniform" and last["code_map"] == "7x7" and 0 < last["test_mse"] < 4
    from tests.test_train import scalars

    tags = set(scalars(a)["scalars"])
    assert {"vqvae/perplexity", "vqvae/codes_used", "vqvae/commitment", "vqvae/mse"} <= tags
    assert ("vqvae/codebook" in tags) == (not extra)


def test_prior_trains_on_the_frozen_codes_and_samples_by_itself(vqvae_run, mnist_root, tmp_path):
    prior = tmp_path / "prior"
    train(cfg(mnist_root, "vqvae_prior", 4, [f"model.vqvae_run={vqvae_run}"]), prior)
    first = torch.load(vqvae_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    state = torch.load(prior / "checkpoints" / "last.pt", weights_only=True)
    for k, v in first.items():  # the VQ-VAE is copied in and stays frozen
        assert torch.equal(state["model"][f"vqvae.{k}"], v), k
    assert state["config"]["model"]["vqvae"]["codebook_size"] == 16
    last = history(prior)[-1]
    assert last["code_prior"] == "pixelcnn"
    assert last["test_elbo_bits_per_dim"] == pytest.approx(
        last["test_decoder_bits_per_dim"] + last["test_prior_bits_per_code"] * 49 / 784)
    # the prior run alone: the VQ-VAE's folder is gone
    import shutil

    shutil.rmtree(vqvae_run)
    r = run_cli(["sample", f"run={prior}", "num_samples=4", f"out={tmp_path / 's.npz'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    import numpy as np

    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 28, 28, 1)


def test_prior_resumes_bit_identically(vqvae_run, mnist_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    over = [f"model.vqvae_run={vqvae_run}"]
    train(cfg(mnist_root, "vqvae_prior", 6, over), a)
    train(cfg(mnist_root, "vqvae_prior", 3, over), b)
    train(cfg(mnist_root, "vqvae_prior", 6, [*over, f"trainer.resume={b}"]), b)
    assert_same_state(torch.load(a / "checkpoints" / "last.pt", weights_only=True),
                      torch.load(b / "checkpoints" / "last.pt", weights_only=True))


def test_a_prior_on_a_run_that_is_not_a_vqvae_is_one_line(mnist_root, tmp_path):
    other = tmp_path / "flow"
    train(compose(["dataset=mnist", f"dataset.root={mnist_root}", *TINY, "model=nice", "model.hidden=8",
                   "model.n_blocks=1", "trainer.max_steps=1", "trainer.eval_every=0"]), other)
    r = run_cli(["train", "model=vqvae_prior", "dataset=mnist", f"dataset.root={mnist_root}", *TINY,
                 f"model.vqvae_run={other}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"genlab: error: model.vqvae_run={other} is a run of model=nice, not a VQVAE")
    assert not (tmp_path / "run").exists()


def test_a_prior_without_a_vqvae_run_or_on_other_data_is_refused(vqvae_run, mnist_root):
    from genlab.config import validate

    with pytest.raises(GenlabError, match="model=vqvae_prior needs model.vqvae_run: the run folder of a trained VQVAE"):
        validate(compose(["model=vqvae_prior", "dataset=mnist"]))
    with pytest.raises(GenlabError, match=r"trained on image of shape \(1, 28, 28\), this dataset gives image of shape"):
        validate(compose(["model=vqvae_prior", "dataset=mnist", "dataset.image_size=32", f"model.vqvae_run={vqvae_run}"]))
    with pytest.raises(GenlabError, match="no checkpoint at"):
        validate(compose(["model=vqvae_prior", "dataset=mnist", f"model.vqvae_run={vqvae_run}/nothing"]))


def test_vqvae_refuses_points_and_odd_sizes():
    from genlab.config import validate

    with pytest.raises(GenlabError, match="needs image data"):
        validate(compose(["model=vqvae", "dataset=grid25"]))
    with pytest.raises(GenlabError, match="ema_decay must be in"):
        validate(compose(["model=vqvae", "dataset=mnist", "model.ema_decay=1.5"]))


def _ema_rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    q = VectorQuantizer(4, 3, ema_decay=0.9)
    g = torch.Generator().manual_seed(rank + 1)
    z = torch.randn(10, 3, generator=g)
    codes = torch.randint(0, 4, (10,), generator=g)
    q.ema_update(z, codes)
    torch.save({"codebook": q.codebook.clone(), "z": z, "codes": codes}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ema_codebook_updates_sum_over_ranks(tmp_path):
    """Under DDP the EMA codebook update adds every rank's statistics (an all-reduce): the ranks' codebooks
    stay equal, and equal one process's update on the whole global batch."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ema_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["codebook"], r1["codebook"])
    torch.manual_seed(0)
    single = VectorQuantizer(4, 3, ema_decay=0.9)
    single.ema_update(torch.cat([r0["z"], r1["z"]]), torch.cat([r0["codes"], r1["codes"]]))
    assert torch.allclose(single.codebook, r0["codebook"], atol=1e-6)
