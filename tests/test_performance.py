"""Close to the limit: the loop's hot path, the quick informational CLI, the fast likelihood evaluation."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.conftest import REPO, compose, run_cli


# ---- the loop's hot path ------------------------------------------------------------------------
def test_gan_diagnostics_are_computed_only_where_they_are_written():
    from genlab.config import model_class, validate
    from genlab.data import Spec
    from genlab.types import Batch, StepContext

    cfg = compose(["model=wgan_gp", "dataset=grid25", "model.generator.hidden=8", "model.discriminator.hidden=8"])
    gan = model_class(cfg)(validate(cfg), Spec("points", (2,)))
    batch = Batch(torch.randn(16, 2))
    torch.manual_seed(0)
    loss_log, logs = gan.discriminator_step(batch, StepContext(0, log=True))
    torch.manual_seed(0)
    loss_quiet, quiet = gan.discriminator_step(batch, StepContext(0, log=False))
    assert {"wasserstein", "critic_real", "critic_fake", "gradient_penalty"} <= set(logs)
    # The penalty is part of the loss anyway; the diagnostics, and E[sign D(real)] that only ADA reads at
    # every update, are not computed.
    assert set(quiet) == {"gradient_penalty"}
    assert loss_quiet.item() == loss_log.item()  # the objective does not depend on what is logged


def test_the_identity_augmentation_is_skipped_and_only_adaptive_ones_get_real_sign_every_update():
    from genlab.models import augment as aug

    class Mine(aug.Augment):  # a user's augmentation: its forward is D's path, whatever it declares
        def forward(self, x):
            return x.flip(-1)

    class Steered(aug.Augment):
        def adapt(self, logs):
            self.seen = logs["real_sign"]

    built = {"identity": aug.Augment(), "mine": Mine(), "steered": Steered()}
    assert [(k, a.active, a.reads_real_sign) for k, a in built.items()] == [
        ("identity", False, False), ("mine", True, False), ("steered", False, True)]
    assert aug.DiffAugment.forward is not aug.Augment.forward and aug.ADA.adapt is not aug.Augment.adapt

    from genlab.config import model_class, validate
    from genlab.data import Spec
    from genlab.types import Batch, StepContext

    cfg = compose(["model=wgan_gp", "dataset=grid25", "model.generator.hidden=8", "model.discriminator.hidden=8"])
    gan = model_class(cfg)(validate(cfg), Spec("points", (2,)))
    gan.augment = Steered()
    _, quiet = gan.discriminator_step(Batch(torch.randn(16, 2)), StepContext(0, log=False))
    gan.after_discriminator(quiet)
    assert "real_sign" in quiet and torch.equal(gan.augment.seen, quiet["real_sign"])


def test_loss_terms_leave_out_absent_ones_and_keep_the_value_bit_for_bit():
    from genlab.types import plus

    a, b = torch.randn((), requires_grad=True), torch.randn((), requires_grad=True)
    assert plus(a, 0.0, 0) is a and plus(0.0, 0) == 0.0
    assert torch.equal(plus(a, 0.0, b), 0.0 + a + b) and torch.equal(plus(0.0, a, 2.0), a + 2.0)
    total = plus(a, 0.0, b)
    assert type(total.grad_fn).__name__ == "AddBackward0" and len(total.grad_fn.next_functions) == 2


def test_the_first_non_finite_step_is_found_across_folds_as_a_scan_finds_it():
    from genlab.engine.scalars import _FOLD, FirstNonFinite

    never = 2**62
    for bad in ([], [3], [_FOLD + 5, 2 * _FOLD + 1], [_FOLD, _FOLD + 1], [7, 2]):
        w = FirstNonFinite(never, "cpu")
        values = [float("nan") if s in bad[::2] else float("inf") if s in bad[1::2] else float(s)
                  for s in range(1, 3 * _FOLD)]
        for s, v in enumerate(values, start=1):
            w.add(s, torch.tensor(v, requires_grad=True) * 1.0)
            if s == _FOLD + 3:  # a read in between (a logging step) folds early
                w.flag()
        scan = next((s for s, v in enumerate(values, start=1) if not torch.isfinite(torch.tensor(v))), never)
        assert int(w.flag()) == scan and w.flag().dtype == torch.int64


def _faults_after_reuse(keep: bool) -> int:
    code = ("import ctypes, resource\n"
            + ("from genlab.engine.memory import keep_freed_memory\nassert keep_freed_memory()\n" if keep else "")
            + "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
              "n = 1 << 20\n"
              "def step():  # two 1 MiB tensors of one step, freed at its end\n"
              "    a, b = libc.malloc(n), libc.malloc(n); ctypes.memset(a, 1, n); ctypes.memset(b, 1, n)\n"
              "    libc.free(ctypes.c_void_p(b)); libc.free(ctypes.c_void_p(a))\n"
              "for _ in range(2):\n"
              "    step()\n"
              "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "for _ in range(10):\n"
              "    step()\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_step_memory_is_reused_not_faulted_back_in():
    # glibc by default trims the heap's top once twice its (adapted) mmap threshold is free, and the
    # next step faults the 512 pages in again; with the trainer's thresholds they stay in the heap.
    assert _faults_after_reuse(keep=False) >= 10 * 400
    assert _faults_after_reuse(keep=True) < 50


# ---- the informational CLI ------------------------------------------------------------------------
def test_help_lists_genlab_groups_from_the_config_tree(tmp_path):
    from genlab.cli import config_groups, group_options

    groups = config_groups()
    assert groups["model"] == group_options("model") and "_gan_base" not in groups["model"]
    assert "trainer_schema" not in groups["trainer"] and not any(g.startswith("hydra") for g in groups)
    r = run_cli(["train", "--help", "model=vae", "dataset=grid25"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train is powered by Hydra" in r.stdout and "== Configuration groups ==" in r.stdout
    assert f"model: {', '.join(group_options('model'))}\n" in r.stdout
    assert "  name: vae\n" in r.stdout and "  name: grid25\n" in r.stdout  # the composed config, overrides applied
    assert "Use --hydra-help to view Hydra specific help" in r.stdout
    bad = run_cli(["train", "--help", "model=nope"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("genlab: error: unknown model 'nope'; available:")


@pytest.mark.parametrize("flags", [["--cfg", "job"], ["--cfg", "job", "--resolve"], ["--cfg", "job", "-p", "model"],
                                   ["--cfg", "hydra"]])
def test_cfg_answers_exactly_as_hydra_does(flags, tmp_path):
    """The quick path prints what Hydra's own app prints for the same flags."""
    args = ["train", *flags, "model=gan", "dataset=ring8"]
    code = ("import sys\nfrom genlab.cli import info_app\n"
            f"sys.argv = ['genlab-train', *{args[1:]!r}]\ninfo_app('train')()\n")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GENLAB_OUTPUTS": "out",
           "GENLAB_RECIPE": "paper"}  # both sides resolve trainer.recipe from the same environment
    hydra = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env=env)
    ours = run_cli(args, tmp_path, env=env)
    assert ours.returncode == 0 and hydra.returncode == 0, ours.stderr + hydra.stderr
    strip = (lambda out: "\n".join(line for line in out.splitlines() if "${now:" not in line and "/20" not in line))
    assert strip(ours.stdout) == strip(hydra.stdout)
    assert ("hydra:\n  run:" if flags[1] == "hydra" else "name: gan") in ours.stdout


# ---- the likelihood evaluation ---------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding,kernel,out", [(2, 1, 4, 2), (1, 0, 7, 3), (2, 0, 3, 1), (3, 2, 5, 4)])
def test_fold_conv_transpose_is_the_transposed_convolution(stride, padding, kernel, out):
    from genlab.nets.inference import FoldConvTranspose2d

    conv = nn.ConvTranspose2d(5, out, kernel, stride, padding).double()
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(FoldConvTranspose2d(conv)(x), conv(x), rtol=1e-12, atol=1e-12)
    # channels-last input takes the product in its own layout (no copy): the same function
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(FoldConvTranspose2d(conv)(cl), conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,h,bias", [(6, 5, 4, True), (3, 9, 7, False), (4, 2, 1, True)])
def test_subpixel_conv_transpose_is_the_transposed_convolution(cin, cout, h, bias):
    from genlab.nets.inference import SubpixelConvTranspose2d

    conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias).double()
    assert SubpixelConvTranspose2d.applies(conv)
    assert not SubpixelConvTranspose2d.applies(nn.ConvTranspose2d(cin, cout, 3, 2, 1))
    x = torch.randn(3, cin, h, h + 1, dtype=torch.float64)  # non-square: rows and columns are not mixed up
    for layout in (torch.contiguous_format, torch.channels_last):  # the phases interleave in either
        torch.testing.assert_close(SubpixelConvTranspose2d(conv)(x.contiguous(memory_format=layout)), conv(x),
                                   rtol=1e-12, atol=1e-12)


def test_project_conv_transpose_is_a_matrix_product_on_1x1_inputs_only():
    from genlab.nets.inference import ProjectConvTranspose2d

    conv = nn.ConvTranspose2d(6, 4, 7, 1, 0).double()
    fast = ProjectConvTranspose2d(conv)
    for size in (1, 3):  # 1x1: the matrix product; larger inputs fall back to the convolution itself
        x = torch.randn(5, 6, size, size, dtype=torch.float64)
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-12, atol=1e-12)


def test_inference_copy_computes_the_same_function_and_leaves_the_net_alone():
    from genlab.nets.dcgan import DCGANGenerator
    from genlab.nets.inference import (FoldConvTranspose2d, ProjectConvTranspose2d, SubpixelConvTranspose2d,
                                       inference_copy)

    torch.manual_seed(0)
    net = DCGANGenerator(z_dim=8, shape=(2, 28, 28), base_channels=16, norm="batch", out_activation="none").double()
    for _ in range(3):  # running statistics away from 0 / 1, so folding them is tested
        net(torch.randn(32, 8, dtype=torch.float64))
    net.eval()
    fast = inference_copy(net)
    z = torch.randn(16, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(z), net(z), rtol=1e-10, atol=1e-10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, FoldConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, SubpixelConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, ProjectConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) and all(p.requires_grad for p in net.parameters())


def test_discretized_logistic_is_the_one_component_mixture():
    from genlab.nets.pixelcnn import discretized_logistic_log_prob, discretized_mix_logistic_log_prob

    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 5)).double() / 127.5 - 1  # 8-bit levels, 0 and 255 included
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -1.0, 1.0
    mean, log_scale = torch.randn(4, 3, 5, 5).double(), torch.randn(4, 3, 5, 5).double() - 2
    params = torch.cat([torch.zeros(4, 1, 5, 5).double(), mean, log_scale, torch.zeros(4, 3, 5, 5).double()], 1)
    torch.testing.assert_close(discretized_logistic_log_prob(x, mean, log_scale),
                               discretized_mix_logistic_log_prob(x, params), rtol=1e-12, atol=1e-9)


def test_vae_nll_on_the_inference_copy_matches_the_plain_decoder(tmp_path):
    from genlab.config import model_class, validate
    from genlab.models.likelihood import LikelihoodModel
    from tests.conftest import make_mnist

    root = make_mnist(tmp_path / "data", "FashionMNIST", n_train=32, n_test=6)
    cfg = compose(["model=vae", "dataset=fashion_mnist", f"dataset.root={root}", "dataset.download=false",
                   "model.encoder.base_channels=4", "model.decoder.base_channels=4", "model.eval_chunk=64"])
    from genlab import data as data_lib

    data = data_lib.build(cfg.dataset, "cpu")
    vae = model_class(cfg)(validate(cfg), data.spec)
    vae.train()
    vae.decoder(torch.randn(8, cfg.model.z_dim))  # batch-norm statistics that folding must carry
    vae.eval()
    fast = vae.evaluate(data, limit=6, k=50)
    plain = LikelihoodModel.evaluate(vae, data, limit=6, k=50)  # the template alone: the decoder as trained
    assert fast["test_nll_nats"] == pytest.approx(plain["test_nll_nats"], rel=1e-6)
    assert vae._eval_decoder is None and "_eval_decoder" not in dict(vae.named_modules())


def test_nll_cost_estimate_is_said_once_before_the_rest(caplog):
    from genlab.metrics.likelihood import CostEstimate, cost_line

    assert cost_line(10000, 1000, 0.42, "CPU") == ("NLL on 10,000 test images with k=1000: about 70 min on this CPU; "
                                                   "eval.nll_images=1000 for about 7 min")
    assert cost_line(500, None, 0.01, "GPU") == "NLL on 500 test images: about 5 s on this GPU"
    estimate = CostEstimate(100, 10, "CPU")
    with caplog.at_level(logging.INFO, logger="genlab"):
        for done in (5, 50, 100):
            estimate(done)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("NLL on 100 test images with k=10")]
    assert len(lines) == 1 and lines[0] == estimate.estimate


def test_genlab_eval_says_the_nll_cost_first(tmp_path):
    """Through the evaluator: the estimate comes after the first batch, before the rest of the split."""
    from genlab import data as data_lib
    from genlab.config import model_class, validate
    from genlab.metrics.evaluator import Evaluator
    from genlab.metrics.records import EvalSettings
    from tests.conftest import make_mnist

    root = make_mnist(tmp_path / "data", "FashionMNIST", n_train=32, n_test=12)
    cfg = compose(["model=vae", "dataset=fashion_mnist", f"dataset.root={root}", "dataset.download=false",
                   "model.encoder.base_channels=4", "model.decoder.base_channels=4", "model.eval_chunk=40"])
    data = data_lib.build(cfg.dataset, "cpu")
    vae = model_class(cfg)(validate(cfg), data.spec).eval()
    seen = []
    vae_evaluate = vae.evaluate

    def evaluate(*a, on_batch=None, **kw):
        return vae_evaluate(*a, on_batch=lambda n: (on_batch(n), seen.append((n, on_batch.estimate))), **kw)

    vae.evaluate = evaluate
    ev = Evaluator(data, EvalSettings(num_samples=4, nll_k=20), metrics=["nll"])
    entries, _ = ev.evaluate(vae, ["nll"])
    assert "test_nll_nats" in entries
    assert seen[0][1] == seen[-1][1] and seen[0][1].startswith("NLL on 12 test images with k=20: about ")
    assert [n for n, _ in seen] == list(range(2, 13, 2))  # 40 // 20 = 2 images per batch
