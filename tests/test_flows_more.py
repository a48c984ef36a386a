"""MADE, MAF, neural spline couplings and reverse-KL training against brute force and closed forms."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from genlab.data.toy import MIXTURES, mixture_log_density, sample_mixture
from genlab.models.base import Batch, StepContext
from genlab.nets.flows import (MADE, BatchNormFlow, Coupling, MaskedAutoregressive, Reverse, build_flow, made_masks,
                               rational_quadratic_spline)
from tests.conftest import TINY, compose, run_cli
from tests.test_nets_flows import check_layer, perturb


def grid_mass(flow, half_width=12.0, n=481):
    """The Riemann sum of a 2-D density over [-w, w]^2."""
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    with torch.no_grad():
        return float(flow.log_prob(torch.cartesian_prod(t, t)).exp().sum() * (t[1] - t[0]) ** 2)


# ----------------------------------------------------------------------------- MADE and MAF


@pytest.mark.parametrize("dim,hidden,n_hidden", [(5, 16, 1), (6, 7, 2), (3, 8, 3)])
def test_made_jacobian_is_strictly_lower_triangular(dim, hidden, n_hidden):
    made = perturb(MADE(dim, hidden, n_hidden, n_params=2), std=0.5)
    upper = torch.triu(torch.ones(dim, dim, dtype=torch.bool))  # j >= i
    total = torch.zeros(2, dim, dim, dtype=torch.float64)
    for x in torch.randn(10, dim, dtype=torch.float64):
        jac = jacobian(lambda v: made(v.unsqueeze(0))[0], x)  # (2, D, D): d out[p, i] / d x[j]
        assert torch.all(jac[:, upper] == 0)
        total += jac.abs()
    # and it is not trivially zero: every output i > 0 depends on earlier inputs (somewhere: ReLUs switch off)
    assert all(total[:, i, :i].sum() > 0 for i in range(1, dim))


def test_made_masks_connect_every_input_to_every_later_output():
    masks = made_masks(4, 6, 2)
    path = masks[0]
    for m in masks[1:]:
        path = m @ path  # paths from input j to output i
    expected = torch.tril(torch.ones(4, 4), -1)  # output i reaches inputs j < i, and all of them
    assert torch.equal(path > 0, expected > 0)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_maf_layer_logdet_and_inverse(dim):
    check_layer(perturb(MaskedAutoregressive(dim, hidden=16, n_hidden=2), std=0.3),
                torch.randn(3, dim, dtype=torch.float64))


def test_batchnorm_flow_logdet_and_inverse_in_eval_mode():
    layer = BatchNormFlow(3).double()
    layer.train()
    layer(torch.randn(64, 3, dtype=torch.float64) * 2 + 1)  # moves the running averages
    assert not torch.allclose(layer.running_mean, torch.zeros(3, dtype=torch.float64))
    perturb(layer, std=0.3)
    check_layer(layer, torch.randn(4, 3, dtype=torch.float64))
    check_layer(layer, torch.randn(2, 3, 2, 2, dtype=torch.float64))


def test_batchnorm_flow_normalises_a_training_batch():
    layer = BatchNormFlow(2)
    x = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    z, logdet = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    torch.testing.assert_close(logdet[0], -0.5 * torch.log(x.var(0, unbiased=False) + 1e-5).sum())


def test_reverse_is_a_volume_preserving_permutation():
    check_layer(Reverse(), torch.randn(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("kind,shape", [("maf", (4,)), ("maf", (1, 2, 2)), ("made", (5,))])
def test_whole_maf_logdet_and_inverse(kind, shape):
    flow = build_flow(kind, shape, n_layers=3, hidden=16, n_blocks=1, norm="batch")
    flow.train()
    flow(torch.randn(32, *shape))  # the batch norms' running averages move off (0, 1)
    check_layer(perturb(flow, std=0.2), torch.randn(3, *shape, dtype=torch.float64))


@pytest.mark.parametrize("kind,norm", [("maf", "batch"), ("maf", "actnorm"), ("made", "none")])
def test_maf_density_integrates_to_one(kind, norm):
    flow = build_flow(kind, (2,), n_layers=3, hidden=16, n_blocks=1, norm=norm)
    flow.train()
    flow(torch.randn(64, 2) * 0.7)
    flow = perturb(flow, std=0.15).eval()
    assert abs(grid_mass(flow) - 1) < 2e-3


# ----------------------------------------------------------------------------- rational-quadratic splines


def spline_params(shape, bins, std=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [std * torch.randn(*shape, n, generator=g, dtype=torch.float64) for n in (bins, bins, bins - 1)]


def test_spline_is_monotone_with_the_exact_derivative_and_inverse():
    bound = 2.0
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    w, h, d = spline_params((1,), 5)
    w, h, d = (t.expand(len(x), -1) for t in (w, h, d))
    y, logdet = rational_quadratic_spline(x, w, h, d, bound)
    assert torch.all(y[1:] > y[:-1])  # strictly increasing
    grad = torch.autograd.functional.jacobian(lambda v: rational_quadratic_spline(v, w, h, d, bound)[0], x).diagonal()
    torch.testing.assert_close(logdet, grad.log(), atol=1e-8, rtol=1e-8)
    x_again, _ = rational_quadratic_spline(y, w, h, d, bound, inverse=True)
    torch.testing.assert_close(x_again, x, atol=1e-10, rtol=0)
    outside = x.abs() >= bound
    assert torch.equal(y[outside], x[outside]) and torch.all(logdet[outside] == 0)  # identity tails
    torch.testing.assert_close(y[x.abs() <= bound].abs().max(), torch.tensor(bound, dtype=torch.float64))


def test_spline_with_zero_parameters_is_the_identity():
    x = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)
    zeros = [torch.zeros(11, n, dtype=torch.float64) for n in (4, 4, 3)]
    y, logdet = rational_quadratic_spline(x, *zeros, bound=3.0)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros_like(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mask,channels", [("checkerboard", 1), ("channel", 4)])
@pytest.mark.parametrize("parity", [0, 1])
def test_spline_coupling_image_logdet_and_inverse(mask, channels, parity):
    layer = perturb(Coupling(channels, mask, parity, hidden=8, n_blocks=1, rule="spline", bins=4, tail_bound=2.0),
                    std=0.3)
    check_layer(layer, torch.randn(2, channels, 4, 4, dtype=torch.float64))


@pytest.mark.parametrize("dim,parity", [(2, 0), (5, 1)])
def test_spline_coupling_vector_logdet_and_inverse(dim, parity):
    layer = perturb(Coupling(dim, "alternate", parity, hidden=16, n_blocks=1, rule="spline", bins=6), std=0.5)
    check_layer(layer, 1.5 * torch.randn(4, dim, dtype=torch.float64))


def test_fresh_spline_coupling_is_the_identity():
    x = torch.randn(3, 2, 4, 4)
    z, logdet = Coupling(2, "checkerboard", 0, hidden=8, n_blocks=1, rule="spline")(x)
    torch.testing.assert_close(z, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, torch.zeros(3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["realnvp", "glow", "nice"])
def test_spline_rule_in_every_coupling_builder(kind):
    options = dict(n_scales=2, steps_per_scale=1, hidden=8, n_blocks=1, n_layers=2, rule="spline", bins=3)
    flow = build_flow(kind, (1, 8, 8) if kind != "nice" else (4,), **options)
    couplings = [m for m in flow.modules() if isinstance(m, Coupling)]
    assert couplings and all(c.rule_name == "spline" and c.rule.bins == 3 for c in couplings)
    flow.train()
    flow(torch.randn(8, *flow.shape))  # ActNorm's data-dependent initialisation
    shape = flow.shape
    check_layer(perturb(flow, std=0.1), torch.randn(2, *shape, dtype=torch.float64))


def test_spline_flow_density_integrates_to_one():
    flow = perturb(build_flow("realnvp", (2,), n_layers=4, hidden=16, n_blocks=1, rule="spline", bins=5,
                              tail_bound=2.5), std=0.3).eval()
    assert abs(grid_mass(flow) - 1) < 2e-3


def test_bad_bin_counts_are_refused():
    with pytest.raises(ValueError, match="bins >= 2"):
        Coupling(2, "alternate", 0, rule="spline", bins=1)


def test_cli_refuses_a_spline_with_one_bin_in_one_line(mnist_root, tmp_path):
    r = run_cli(["train", "model=nsf", "dataset=mnist", f"dataset.root={mnist_root}", *TINY, "model.spline_bins=1",
                 f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("genlab: error: ")
    assert "the spline coupling needs at least 2 bins, got 1" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides,message", [
    (["model=nsf", "model.coupling=wavy"], "the coupling rule must be one of"),
    (["model=nsf", "model.tail_bound=0"], "tail_bound > 0"),
    (["model=nsf", "model.objective=reverse_kl"], "model.objective=reverse_kl needs a dataset with a known density"),
    (["model=maf", "model.objective=reverse_kl"], "use model.norm=actnorm or none"),
    (["model=realnvp", "model.objective=forward"], "model.objective must be one of mle, reverse_kl"),
])
def test_bad_flow_options_are_config_errors(overrides, message):
    from genlab.config import validate
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match=message):
        validate(compose([f"dataset={'grid25' if 'model=maf' in overrides else 'mnist'}", *overrides]))


def test_maf_declares_slow_sampling_on_images_only():
    from genlab.config import build_model
    from genlab.data import Spec

    image = build_model(compose(["model=maf", "dataset=mnist", "model.hidden=8", "model.n_layers=1"]),
                        Spec("image", (1, 28, 28)))
    points = build_model(compose(["model=maf", "dataset=grid25", "model.hidden=8"]), Spec("points", (2,)))
    nsf = build_model(compose(["model=nsf", "dataset=mnist", "model.hidden=8"]), Spec("image", (1, 28, 28)))
    assert image.slow_sampling and not points.slow_sampling and not nsf.slow_sampling


# ----------------------------------------------------------------------------- reverse KL


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_log_density_is_the_mixture(name):
    centers, std, _ = MIXTURES[name]
    c = centers().double()
    x, _ = sample_mixture(name, 50, torch.Generator().manual_seed(1))
    x = x.double()
    comps = torch.distributions.Normal(c.unsqueeze(0), std).log_prob(x.unsqueeze(1)).sum(-1).exp()
    torch.testing.assert_close(mixture_log_density(name, x), comps.mean(1).log())


def test_reverse_kl_step_of_an_identity_flow_is_the_kl_of_the_base():
    """A fresh RealNVP is the identity, so q = N(0, I) and the loss estimates KL(N(0, I) || ring8)."""
    from genlab.config import build_model
    from genlab.data import Spec

    model = build_model(compose(["model=realnvp", "dataset=ring8", "model.objective=reverse_kl", "model.hidden=8"]),
                        Spec("points", (2,)))
    (step,) = model.schedule()
    assert not step.needs_data
    torch.manual_seed(3)
    loss, logs = step.fn(Batch.of_size(20000), StepContext(0))
    z = torch.randn(200000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kl = float((-0.5 * (z**2).sum(1) - math.log(2 * math.pi) - mixture_log_density("ring8", z)).mean())
    assert abs(float(loss) - kl) < 0.02 * abs(kl)
    loss.backward()  # reparameterised: gradients reach the conditioners
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_reverse_kl_training_lowers_the_kl(tmp_path):
    from genlab.commands.train import train

    over = ["model=realnvp", "dataset=ring8", "model.objective=reverse_kl", "model.hidden=32", "model.n_layers=4",
            *TINY, "trainer.log_every=1", "trainer.batch_size=256", "trainer.sample_every=0", "trainer.eval_every=0",
            "optimizer.lr=3e-3", "dataset.n_train=256", "dataset.n_test=256"]
    first = train(compose([*over, "trainer.max_steps=1"]), tmp_path / "a")["flow/reverse_kl"]
    last = train(compose([*over, "trainer.max_steps=150"]), tmp_path / "b")["flow/reverse_kl"]
    assert last < first - 2.0
