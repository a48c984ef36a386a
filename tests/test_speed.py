"""trainer.compile and trainer.channels_last: the same training, faster paths."""

from __future__ import annotations

import shutil

import pytest
import torch

from genlab.config import TrainerConfig

from tests.conftest import compose

TOY_GAN = ["model=gan", "dataset=grid25", "trainer=debug", "trainer.progress=false", "trainer.num_threads=1",
           "trainer.sample_every=0", "trainer.max_steps=3", "dataset.n_train=2000", "dataset.n_test=500",
           "model.generator.hidden=32", "model.discriminator.hidden=32"]


def _train(overrides, run_dir):
    from genlab.commands.train import train

    train(compose(overrides), run_dir)
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def _max_diff(a: dict, b: dict) -> float:
    return max((v.float() - b[k].float()).abs().max().item() for k, v in a.items() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C compiler (gcc) to build its kernels")
def test_compile_trains_a_toy_gan_like_eager(tmp_path):
    eager = _train(TOY_GAN, tmp_path / "eager")
    compiled = _train([*TOY_GAN, "trainer.compile=true"], tmp_path / "compiled")
    init = _train([*TOY_GAN, "trainer.max_steps=0"], tmp_path / "init")
    assert _max_diff(eager, init) > 1e-3  # training moved the weights...
    assert _max_diff(compiled, eager) < 1e-4  # ...and the compiled networks moved them the same way
    assert set(compiled) == set(eager)  # in-place compile: checkpoints keep their keys


def test_compile_targets_leave_out_what_cannot_compile():
    from genlab.config import model_class, typed_model_config
    from genlab.data import expected_spec

    for overrides, expected in ((["model=wgan_gp"], {"generator"}), (["model=gan"], {"generator", "discriminator"}),
                                (["model=vae", "dataset.binarize=dynamic"], {"encoder", "decoder"}),
                                (["model=realnvp"], {"flow"})):
        cfg = compose([*overrides, "dataset=mnist"])
        model = model_class(cfg)(typed_model_config(cfg), expected_spec(cfg.dataset))
        assert set(model.compile_targets()) == expected, overrides


def test_channels_last_trains_dcgan_like_contiguous(mnist_root, tmp_path):
    base = ["model=dcgan", "dataset=mnist", f"dataset.root={mnist_root}", "dataset.download=false", "trainer=debug",
            "trainer.progress=false", "trainer.num_threads=1", "trainer.sample_every=0", "trainer.max_steps=2",
            "trainer.batch_size=8", "model.generator.base_channels=8", "model.discriminator.base_channels=8"]
    plain = _train(base, tmp_path / "plain")
    nhwc = _train([*base, "trainer.channels_last=true"], tmp_path / "nhwc")
    assert _max_diff(plain, nhwc) < 1e-4


def test_channels_last_converts_the_networks_and_batches():
    from genlab.engine import distributed
    from genlab.types import Batch
    from omegaconf import OmegaConf

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def networks(self):
            return {"net": self.net}

    m = M()
    dist = distributed.Dist(torch.device("cpu"))
    distributed.prepare_model(m, dist, OmegaConf.structured(TrainerConfig(channels_last=True)))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    run = distributed.StepRunner(m, dist, channels_last=True)
    seen = run("net", lambda b, ctx: b.x, Batch(torch.randn(2, 3, 8, 8)), None)
    assert seen.is_contiguous(memory_format=torch.channels_last) and not seen.is_contiguous()


def test_sync_batchnorm_on_cpu_is_a_user_error():
    from genlab.engine import distributed
    from genlab.errors import GenlabError
    from omegaconf import OmegaConf

    with pytest.raises(GenlabError, match="needs CUDA"):
        distributed.prepare_model(torch.nn.Module(), distributed.Dist(torch.device("cpu")),
                                  OmegaConf.structured(TrainerConfig(sync_batchnorm=True)))
