"""trainer.recipe: the papers' networks on an accelerator, networks that learn fast per CPU-second on a CPU.

A model file writes ${recipe:PAPER,CPU} where the recipes differ (the GAN family: MLPs with a generator
EMA on a CPU); auto picks cpu when the run's device is the CPU. The conftest pins GENLAB_RECIPE=paper for
the rest of the suite; these tests set it themselves.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY, compose, run_cli


@pytest.fixture
def env_recipe(monkeypatch):
    def set_(value):
        if value is None:
            monkeypatch.delenv("GENLAB_RECIPE", raising=False)
        else:
            monkeypatch.setenv("GENLAB_RECIPE", value)
    return set_


def resolved(overrides):
    cfg = compose(overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def test_cpu_recipe_gives_image_gans_the_mlps_and_an_ema(env_recipe):
    env_recipe(None)
    c = resolved(["model=dcgan", "dataset=fashion_mnist", "trainer.recipe=cpu"])
    g, d = c["model"]["generator"], c["model"]["discriminator"]
    assert (g["arch"], g["widths"]) == ("mlp", [128, 256, 512, 1024])
    assert (d["arch"], d["widths"]) == ("mlp", [512, 256])
    assert c["model"]["ema_decay"] == 0.999
    p = resolved(["model=dcgan", "dataset=fashion_mnist", "trainer.recipe=paper"])
    assert (p["model"]["generator"]["arch"], p["model"]["generator"]["widths"], p["model"]["ema_decay"]) == \
        ("auto", None, None)


@pytest.mark.parametrize("device,expected", [("cpu", "mlp"), ("cuda", "auto"), ("cuda:1", "auto"), ("mps", "auto")])
def test_auto_follows_the_device(env_recipe, device, expected):
    env_recipe(None)  # trainer.recipe's default is auto
    c = resolved(["model=wgan_gp", "dataset=fashion_mnist", f"trainer.device={device}"])
    assert c["trainer"]["recipe"] == "auto"
    assert c["model"]["generator"]["arch"] == expected


def test_auto_device_asks_torch(env_recipe, monkeypatch):
    env_recipe(None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolved(["model=gan", "dataset=fashion_mnist"])["model"]["generator"]["arch"] == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolved(["model=gan", "dataset=fashion_mnist"])["model"]["generator"]["arch"] == "mlp"


def test_env_sets_the_default_and_the_command_line_wins(env_recipe):
    env_recipe("cpu")
    assert resolved(["model=lsgan", "dataset=fashion_mnist", "trainer.device=cuda"])["model"]["ema_decay"] == 0.999
    env_recipe("paper")
    assert resolved(["model=lsgan", "dataset=fashion_mnist", "trainer.device=cpu"])["model"]["ema_decay"] is None
    assert resolved(["model=lsgan", "dataset=fashion_mnist", "trainer.recipe=cpu"])["model"]["ema_decay"] == 0.999


def test_points_keep_their_networks_under_the_cpu_recipe(env_recipe):
    env_recipe("cpu")
    c = resolved(["model=gan", "dataset=grid25"])
    assert (c["model"]["generator"]["arch"], c["model"]["generator"]["widths"], c["model"]["ema_decay"]) == \
        ("auto", None, None)


def test_a_users_settings_win_over_the_recipe(env_recipe):
    """model.generator.arch=conv on a CPU gets the conv net, without MLP widths that it would reject."""
    from genlab.config import validate

    env_recipe("cpu")
    cfg = compose(["model=dcgan", "dataset=fashion_mnist", "model.generator.arch=conv", "model.ema_decay=null"])
    c = OmegaConf.to_container(cfg, resolve=True)
    assert (c["model"]["generator"]["arch"], c["model"]["generator"]["widths"]) == ("conv", None)
    assert c["model"]["discriminator"]["arch"] == "mlp" and c["model"]["ema_decay"] is None
    validate(cfg)  # no "widths is not a setting of the conv generator"


def test_unknown_recipe_is_one_line(tmp_path, env_recipe):
    env_recipe(None)
    r = run_cli(["train", "model=dcgan", "dataset=grid25", "trainer.recipe=fast", *TINY], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "trainer.recipe must be one of auto, paper, cpu; got fast" in r.stderr
    assert not (tmp_path / "outputs").exists()


def test_mlp_widths_and_image_range():
    from genlab import nets
    from genlab.models.base import NetConfig
    from genlab.types import Spec

    spec = Spec("image", (1, 28, 28))
    g = nets.generator(OmegaConf.structured(NetConfig(arch="mlp", widths=[8, 16, 32])), spec, 4)
    d = nets.discriminator(OmegaConf.structured(NetConfig(arch="mlp", widths=[24, 12], norm="none")), spec)
    linears = [m.out_features for m in g.net if isinstance(m, torch.nn.Linear)]
    assert linears == [8, 16, 32, 28 * 28]
    x = g(torch.randn(5, 4) * 100)
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1  # tanh, as the conv generator's images
    assert d.feature_dim == 12 and d.features(x).shape == (5, 12) and d(x).shape == (5,)


def test_cpu_recipe_run_records_its_recipe_and_samples(tmp_path, mnist_root, env_recipe):
    """A run under auto on a CPU trains the CPU recipe, says so in its record, and genlab sample rebuilds it."""
    env_recipe(None)
    env = {"GENLAB_DATA": str(mnist_root)}
    r = run_cli(["train", "model=dcgan", "dataset=fashion_mnist", *TINY, "hydra.run.dir=run"], tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "recipe cpu" in r.stdout + r.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert state["config"]["trainer"]["recipe"] == "cpu"
    assert state["config"]["model"]["generator"]["widths"] == [128, 256, 512, 1024]
    assert any(k.startswith("ema") or "ema" in k for k in state["model"]), "the generator EMA is checkpointed"
    r = run_cli(["sample", "run=run", "num_samples=8", "out=s.png"], tmp_path, env={**env, "GENLAB_RECIPE": "paper"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.png").stat().st_size > 0
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "done"


def test_mlp_sizes_that_the_recipes_widths_would_hide_are_an_error(env_recipe):
    from genlab.config import validate
    from genlab.errors import GenlabError

    env_recipe("cpu")
    with pytest.raises(GenlabError, match=r"model.generator.hidden=512 has no effect while model.generator.widths="
                                          r"\[128, 256, 512, 1024\] is set"):
        validate(compose(["model=gan", "dataset=fashion_mnist", "model.generator.hidden=512"]))
    validate(compose(["model=gan", "dataset=fashion_mnist", "model.generator.hidden=512", "model.generator.widths=null"]))
    validate(compose(["model=gan", "dataset=fashion_mnist", "model.generator.widths=[64,64]"]))
    c = OmegaConf.to_container(compose(["experiment=cpu_wgan_gp", "dataset=fashion_mnist"]), resolve=True)
    assert (c["model"]["generator"]["hidden"], c["model"]["generator"]["widths"]) == (512, None)


@pytest.mark.parametrize("model,paper,cpu", [("realnvp", (64, 2), (32, 1)), ("glow", (64, 1), (32, 1))])
def test_multiscale_flows_have_a_cpu_recipe_on_images(model, paper, cpu):
    def nets(*over):
        m = OmegaConf.to_container(compose([f"model={model}", *over]), resolve=True)["model"]
        return m["hidden"], m["n_blocks"]

    assert nets("dataset=fashion_mnist", "trainer.recipe=paper") == paper
    assert nets("dataset=fashion_mnist", "trainer.recipe=cpu") == cpu
    assert nets("dataset=grid25", "trainer.recipe=cpu") == paper  # MLP couplings on points: unchanged


def test_wgan_gp_cpu_recipe_is_the_one_file_scripts():
    def get(recipe, dataset="fashion_mnist"):
        c = OmegaConf.to_container(compose(["model=wgan_gp", f"dataset={dataset}", f"trainer.recipe={recipe}"]),
                                   resolve=True)
        return c["optimizer"]["lr"], c["optimizer"]["betas"], c["model"]["discriminator"]["norm"]

    assert get("paper") == (1e-4, [0.0, 0.9], "layer")
    assert get("cpu") == (2e-4, [0.5, 0.999], "none")
    assert get("cpu", "grid25") == (1e-4, [0.0, 0.9], "layer")
