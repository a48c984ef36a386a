"""WAE-MMD, AAE, the VampPrior and the ex-post GMM sampler: closed forms, direct computations, runs,
exact resume and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.commands.train import train
from genlab.data import Spec
from genlab.metrics.kid import imq_kernel, mmd2, rbf_kernel
from genlab.models.gmm import GaussianMixture, fit_gmm
from genlab.types import Batch, StepContext
from tests.conftest import TINY, assert_same_state, compose, nets_for, run_cli

NETS = ["model.encoder.hidden=16", "model.encoder.base_channels=8", "model.z_dim=2"]
CASES = {
    "wae": ["model=wae", *NETS, "model.decoder.hidden=16", "model.decoder.base_channels=8"],
    # the AAE's generator and discriminator play in code space (MLPs on z): no conv widths to set
    "aae": ["model=aae", *NETS, "model.generator.hidden=16", "model.discriminator.hidden=16"],
    "vampprior": ["model=vampprior", *NETS, "model.decoder.hidden=16", "model.decoder.base_channels=8",
                  "model.prior_components=5", "model.eval_k=4", "model.eval_limit=16"],
}


def build(case, dataset="mnist", *extra):
    from genlab.config import build_model

    spec = Spec("image", (1, 28, 28)) if dataset == "mnist" else Spec("points", (2,))
    kind = "image" if dataset == "mnist" else "points"
    return build_model(compose([f"dataset={dataset}", *nets_for(CASES[case], kind), *extra]), spec)


# ----------------------------------------------------------------------------- MMD


def expected_rbf(m1, s1, m2, s2, h, d):
    """E k(X, Y) for X ~ N(m1, s1^2 I), Y ~ N(m2, s2^2 I) under exp(-||x - y||^2 / (2 h^2))."""
    v = h**2 + s1**2 + s2**2
    return (h**2 / v) ** (d / 2) * math.exp(-((m1 - m2) ** 2) * d / (2 * v))


def test_mmd_of_two_gaussians_against_the_closed_form():
    d, h, n = 2, 1.5, 2000
    g = torch.Generator().manual_seed(0)
    x = 0.0 + 1.0 * torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 0.7 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = (expected_rbf(0, 1, 0, 1, h, d) + expected_rbf(0.7, 0.5, 0.7, 0.5, h, d)
             - 2 * expected_rbf(0, 1, 0.7, 0.5, h, d))
    estimate = float(mmd2(x, y, lambda a, b: rbf_kernel(a, b, h)))
    assert exact > 0.05 and estimate == pytest.approx(exact, abs=0.015)


def test_mmd_is_unbiased_near_zero_for_one_distribution_and_the_imq_kernel_is_the_papers():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 3, generator=g, dtype=torch.float64), torch.randn(1000, 3, generator=g, dtype=torch.float64)
    assert abs(float(mmd2(x, y, imq_kernel))) < 5e-3
    a, b = torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]])
    c = 2 * 3  # C = 2 D sigma^2
    expected = sum(s * c / (s * c + 2.0) for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))
    assert float(imq_kernel(a, b)) == pytest.approx(expected)


def test_wae_loss_is_reconstruction_plus_lambda_mmd():
    model = build("wae", "grid25", "model.mmd_weight=3.0")
    x = torch.randn(32, 2)
    torch.manual_seed(5)
    loss, logs = model.train_step(Batch(x), StepContext(0))
    torch.manual_seed(5)
    z = model.codes(x)
    rec = (model.decode(z) - x).pow(2).sum(1).mean()
    pen = mmd2(z, torch.randn_like(z), imq_kernel)
    torch.testing.assert_close(loss, rec + 3.0 * pen)
    torch.testing.assert_close(logs["mmd"], pen.detach())


# ----------------------------------------------------------------------------- VampPrior


def test_vampprior_log_density_is_the_mixture_of_posteriors():
    model = build("vampprior").eval()
    z = torch.randn(7, 2)
    mu, logvar = model.encode(torch.nn.functional.hardtanh(model.pseudo_inputs))
    comps = torch.distributions.Normal(mu, (0.5 * logvar).exp())  # (K, z_dim)
    direct = torch.stack([comps.log_prob(zi).sum(1).exp().mean().log() for zi in z])
    torch.testing.assert_close(model.log_prior(z), direct, rtol=1e-5, atol=1e-5)
    assert model.log_prior(torch.randn(3, 4, 2)).shape == (3, 4)  # (k samples, batch) for the IWAE weights


def test_vampprior_kl_is_the_single_sample_estimate_and_the_standard_prior_keeps_its_closed_form():
    model = build("vampprior").eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    torch.manual_seed(2)
    t = model.elbo_terms(x)
    torch.manual_seed(2)
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
    torch.testing.assert_close(t["kl"], q - model.log_prior(z), rtol=1e-5, atol=1e-4)
    assert "kl_dim" not in t and "kl_dim" in build("vampprior", "mnist", "model.prior=standard").elbo_terms(x)


def test_vampprior_components_are_one_function_of_each_pseudo_input_in_training_and_evaluation():
    """The K pseudo-inputs are encoded as one batch: each component must not depend on the others in
    that batch or on the mode (batch norm made the test NLL of a 5-minute run climb to 14 bits/dim)."""
    model = build("vampprior").train()
    torch.manual_seed(0)
    with torch.no_grad():
        model.pseudo_inputs.normal_(0.0, 0.5)
        trained = model.prior_components()
        alone = model.encode(torch.nn.functional.hardtanh(model.pseudo_inputs[:2]))
        model.eval()
        evaluated = model.prior_components()
    for a, b, c in zip(trained, alone, evaluated):
        torch.testing.assert_close(a[:2], b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_vampprior_evaluation_encodes_its_pseudo_inputs_once_and_scores_the_same():
    """evaluate() encodes the K pseudo-inputs once, not at every chunk of every image, for the same NLL."""
    from genlab.data import Data
    from genlab.models.likelihood import LikelihoodModel

    model = build("vampprior", "grid25", "model.eval_chunk=8").eval()
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    data = Data("points", "points", x, None, x, None)
    k = model.cfg.prior_components
    calls = []
    model.encoder.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    cached = model.evaluate(data)
    assert calls.count(k) == 1 and len(calls) > 3  # the test images in several batches, K once
    calls.clear()
    direct = LikelihoodModel.evaluate(model, data)  # the template alone: K encoded at every chunk
    assert calls.count(k) > 3
    assert cached["test_nll_nats"] == pytest.approx(direct["test_nll_nats"], rel=1e-6)
    assert model._eval_prior is None  # released after the evaluation


def test_vampprior_samples_come_from_its_components():
    model = build("vampprior").eval()
    mu, logvar = model.prior_components()
    eps = torch.zeros(10, 2)
    torch.testing.assert_close(model.prior_latents(eps), mu[torch.arange(10) % 5])


# ----------------------------------------------------------------------------- the GMM sampler


def test_gmm_recovers_a_known_mixture():
    g = torch.Generator().manual_seed(0)
    truth = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                            torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 4.0]], dtype=torch.float64),
                            torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]],
                                          [[1.5, -0.6], [-0.6, 0.5]]], dtype=torch.float64))
    x = truth.sample(20000, generator=g)
    fit = fit_gmm(x, 3, generator=torch.Generator().manual_seed(1))
    order = [int(torch.cdist(m.view(1, -1), fit.means).argmin()) for m in truth.means]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(fit.weights[order], truth.weights, atol=0.01, rtol=0)
    torch.testing.assert_close(fit.means[order], truth.means, atol=0.05, rtol=0)
    torch.testing.assert_close(fit.covariances[order], truth.covariances, atol=0.03, rtol=0.06)


def test_gmm_log_prob_is_the_weighted_sum_of_gaussians():
    gmm = GaussianMixture(torch.tensor([0.25, 0.75], dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64),
                          torch.stack([torch.eye(3), 2 * torch.eye(3)]).double())
    x = torch.randn(5, 3, dtype=torch.float64)
    direct = sum(w * torch.distributions.MultivariateNormal(m, c).log_prob(x).exp()
                 for w, m, c in zip(gmm.weights, gmm.means, gmm.covariances)).log()
    torch.testing.assert_close(gmm.log_prob(x), direct)


# ----------------------------------------------------------------------------- runs


def cfg(case, root, steps=4, extra=()):
    return compose(["dataset=mnist", f"dataset.root={root}", *TINY, "trainer.eval_every=0", f"trainer.max_steps={steps}",
                    *nets_for(CASES[case], "image"), *extra])


@pytest.mark.parametrize("case", sorted(CASES))
def test_autoencoder_trains_and_resumes_bit_identically(case, mnist_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg(case, mnist_root, 6), a)
    train(cfg(case, mnist_root, 3), b)
    train(cfg(case, mnist_root, 6, [f"trainer.resume={b}"]), b)
    assert_same_state(torch.load(a / "checkpoints" / "last.pt", weights_only=True),
                      torch.load(b / "checkpoints" / "last.pt", weights_only=True))
    assert (a / "samples" / "step_000006.png").is_file()


def test_aae_plays_the_gan_templates_losses_and_regularisers(tmp_path):
    over = ["model.loss=wasserstein", "model.gp_weight=10", "model.n_critic=2", "model.adversarial_weight=0.5"]
    model = build("aae", "grid25", *over)
    names = [s.name for s in model.schedule()]
    assert names == ["critic", "generator"] and model.schedule()[0].repeat == 2
    assert set(model.networks()) == {"generator", "discriminator"}  # the GAN's optimizer keys
    x = torch.randn(16, 2)
    loss, logs = model.discriminator_step(Batch(x), StepContext(0))
    assert {"gradient_penalty", "wasserstein", "critic_real", "critic_fake"} <= set(logs)  # the loss table's diagnostics
    torch.manual_seed(3)
    loss, logs = model.generator_step(Batch(x), StepContext(0))
    torch.manual_seed(3)
    z = model.codes(x)
    rec = (model.generator.decoder(z) - x).pow(2).sum(1).mean()
    torch.testing.assert_close(loss, rec - 0.5 * model.discriminate(z)[0].mean())
    clipped = build("aae", "grid25", "model.clip=0.01", "model.loss=wasserstein")
    train(compose(["dataset=grid25", "dataset.n_train=256", "dataset.n_test=128", *TINY, *nets_for(CASES["aae"], "points"),
                   "model.clip=0.01", "model.loss=wasserstein", "optimizer.lr=0.5", "trainer.eval_every=0"]), tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    d = [v for k, v in state.items() if k.startswith("discriminator.") and v.is_floating_point()]
    assert clipped is not None and max(v.abs().max().item() for v in d) <= 0.01 + 1e-7


def test_sample_prior_gmm_fits_caches_and_decodes(mnist_root, tmp_path):
    run = tmp_path / "run"
    train(cfg("wae", mnist_root, 2), run)
    out = tmp_path / "g.npz"
    r = run_cli(["sample", f"run={run}", "prior=gmm", "prior_components=3", "num_samples=8", f"out={out}"], tmp_path,
                env={"GENLAB_DATA": str(mnist_root)})
    assert r.returncode == 0, r.stderr
    (cache,) = (run / "priors").glob("*.pt")
    assert cache.name == "gmm_k3_step2_seed0.pt"
    state = torch.load(cache, weights_only=True)
    assert state["means"].shape == (3, 2) and float(state["weights"].sum()) == pytest.approx(1)
    import numpy as np

    first = np.load(out)["images"]
    assert first.shape == (8, 28, 28, 1)
    from genlab.commands.common import load_run
    from genlab.commands.ex_post import gmm_samples

    loaded = load_run(str(run), device="cpu")
    x = gmm_samples(loaded, 8, 3, 0)  # from the cache, the same mixture and draws
    from genlab.commands.sample import to_uint8_nhwc

    assert np.array_equal(to_uint8_nhwc(x), first)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan")
    train(compose(["model=gan", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=128", *TINY,
                   "model.generator.hidden=8", "model.discriminator.hidden=8", "trainer.max_steps=1",
                   "trainer.eval_every=0"]), run)
    return run


def test_prior_gmm_on_a_gan_is_one_line(gan_run, tmp_path):
    r = run_cli(["sample", f"run={gan_run}", "prior=gmm", f"out={tmp_path / 'x.png'}"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "prior=gmm fits a mixture to an auto-encoder's latent codes; model=gan has no encoder" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args,message", [
    (["prior=flow"], "prior=flow is unknown"),
    (["prior=gmm", "prior_components=0"], "prior_components must be a whole number >= 1"),
    (["prior=gmm", "mode=interp"], "use it with mode=grid"),
])
def test_bad_prior_options_are_refused_before_loading(args, message, tmp_path):
    from genlab.commands.sample import sample
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match=message):
        sample(compose([f"run={tmp_path / 'none'}", *args, f"out={tmp_path / 'x.png'}"], config_name="sample"))


def test_bad_autoencoder_options_are_config_errors():
    from genlab.config import validate
    from genlab.errors import GenlabError

    for over, message in [(["model=wae", "model.kernel=cauchy"], "model.kernel must be one of imq, rbf"),
                          (["model=aae", "model.augment=flip"], "model.augment"),
                          (["model=vampprior", "model.prior_components=0"], "prior_components must be >= 1"),
                          (["model=vae", "model.prior=flow"], "model.prior must be one of standard, vamp"),
                          (["model=vae", "model.prior=vamp"], "batch norm in the encoder normalises"),
                          (["model=vampprior", "model.free_bits=0.5"], "free_bits needs the KL per latent dimension")]:
        with pytest.raises(GenlabError, match=message):
            validate(compose(["dataset=mnist", *over]))
