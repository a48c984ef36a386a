"""Every GAN-family variant trains a few steps on tiny data, checkpoints, and resumes exactly; the
sample command handles labels (conditional models) and translations (CycleGAN)."""

import numpy as np
import pytest
import torch

from conftest import TINY, compose, nets_for, run_cli

NETS = ["model.generator.base_channels=8", "model.discriminator.base_channels=8",
        "model.generator.hidden=16", "model.discriminator.hidden=16"]
VARIANTS = {
    "dcgan": NETS,
    "lsgan": NETS + ["model.loss_params.a=-1", "model.loss_params.c=0"],
    "hinge": NETS + ["model.discriminator.spectral_norm=true"],
    "sngan": NETS + ["model.n_critic=2"],
    "ragan": NETS + ["model.r1_weight=1", "model.r1_every=2", "model.gp_weight=1"],
    "fgan": NETS + ["model.loss_params.divergence=kl"],
    "ebgan": NETS + ["model.code_dim=8"],
    "cgan": NETS,
    "acgan": NETS + ["model.ema_decay=0.9"],
    "infogan": NETS + ["model.categorical=[4,3]", "model.continuous=1"],
    "cyclegan": ["model.generator.base_channels=4", "model.generator.n_blocks=1", "model.discriminator.base_channels=4",
                 "model.pool_size=4", "model.identity_weight=5", "model.ema_decay=0.5"],
}
UNCONDITIONAL = ["dcgan", "lsgan", "hinge", "sngan", "ragan", "fgan", "ebgan", "infogan"]


def _train(overrides, run_dir):
    from genlab.commands.train import train

    return train(compose(overrides), run_dir=run_dir)


def _state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _overrides(model, root, steps, dataset=None):
    data = [] if model == "cyclegan" else [f"dataset={dataset or 'fashion_mnist'}"]
    return [f"model={model}", *data, f"dataset.root={root}", "dataset.download=false", *TINY,
            "trainer.batch_size=8", f"trainer.max_steps={steps}", "trainer.checkpoint_every=0",
            *nets_for(VARIANTS[model], "image")]


@pytest.mark.parametrize("model", sorted(VARIANTS))
def test_variant_trains_checkpoints_and_resumes_exactly(model, mnist_root, tmp_path):
    torch.manual_seed(0)
    last = _train(_overrides(model, mnist_root, 4), tmp_path / "straight")
    assert last and all(np.isfinite(v) for v in last.values())
    straight = _state(tmp_path / "straight")
    assert straight["step"] == 4
    assert any(k.endswith("/loss") for k in last)
    _train(_overrides(model, mnist_root, 2), tmp_path / "first")
    _train(_overrides(model, mnist_root, 4) + [f"trainer.resume={tmp_path / 'first'}"], tmp_path / "resumed")
    resumed = _state(tmp_path / "resumed")
    assert resumed["step"] == 4 and resumed["model"].keys() == straight["model"].keys()
    for k, v in straight["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-5), k
    if "ema_decay=" in " ".join(VARIANTS[model]):
        assert any("generator_ema" in k for k in straight["model"])
    # The visuals were logged: samples/ holds the first grid of the last logging step.
    assert (tmp_path / "straight" / "samples" / "step_000004.png").is_file()


@pytest.mark.parametrize("model", UNCONDITIONAL)
def test_unconditional_variant_trains_on_points(model, tmp_path):
    over = [f"model={model}", "dataset=grid25", "dataset.n_train=256", "dataset.n_test=64", *TINY,
            "trainer.max_steps=2", *nets_for(VARIANTS[model], "points")]
    last = _train(over, tmp_path)
    from genlab.models.losses import LOSSES

    role = LOSSES[compose(over).model.loss].role  # the D step is named after its role
    losses = {f"{role}/loss", "generator/loss"}
    assert losses <= set(last), sorted(last)  # both players logged the last step
    assert all(np.isfinite(last[k]) for k in losses) and all(np.isfinite(v) for v in last.values())
    assert _state(tmp_path)["step"] == 2


def test_conditional_and_unpaired_requirements_are_one_line_errors(mnist_root, tmp_path):
    r = run_cli(["train", "model=cgan", "dataset=grid25", *TINY], tmp_path)
    assert r.returncode == 2 and "no class labels" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["train", "model=cyclegan", "dataset=mnist", f"dataset.root={mnist_root}", *TINY], tmp_path)
    assert r.returncode == 2 and "two unpaired image domains" in r.stderr


def test_sample_labels_for_conditional_models(mnist_root, tmp_path):
    from genlab.commands.sample import sample

    _train(_overrides("acgan", mnist_root, 2), tmp_path / "run")
    out = tmp_path / "s.npz"
    sample(compose([f"run={tmp_path / 'run'}", f"out={out}", "num_samples=7", "labels=[2,5]", "device=cpu"], "sample"))
    d = np.load(out)
    assert d["images"].shape == (7, 28, 28, 1) and d["images"].dtype == np.uint8
    assert d["labels"].dtype == np.int64 and d["labels"].tolist() == [2, 5, 2, 5, 2, 5, 2]
    sample(compose([f"run={tmp_path / 'run'}", f"out={out}", "num_samples=12", "device=cpu"], "sample"))
    assert np.load(out)["labels"].tolist() == [i % 10 for i in range(12)]
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="labels="):
        sample(compose([f"run={tmp_path / 'run'}", f"out={out}", "labels=10", "device=cpu"], "sample"))


def test_sample_translates_a_split_or_a_folder_with_cyclegan(mnist_root, tmp_path):
    from PIL import Image

    from genlab.commands.sample import sample

    _train(_overrides("cyclegan", mnist_root, 2), tmp_path / "run")
    out = tmp_path / "t.npz"
    sample(compose([f"run={tmp_path / 'run'}", f"out={out}", "num_samples=3", "input=test", "direction=b2a",
                    "device=cpu"], "sample"))
    d = np.load(out)
    assert d["images"].shape == (3, 28, 28, 1) and d["inputs"].shape == (3, 28, 28, 1)
    # The NPZ it wrote is an input too: translating its `inputs` again gives the same translations.
    np.savez(tmp_path / "in.npz", images=d["inputs"])
    again = tmp_path / "again.npz"
    sample(compose([f"run={tmp_path / 'run'}", f"out={again}", f"input={tmp_path / 'in.npz'}", "direction=b2a",
                    "device=cpu"], "sample"))
    np.testing.assert_array_equal(np.load(again)["images"], d["images"])
    np.savez(tmp_path / "rgb.npz", images=np.zeros((2, 28, 28, 3), np.uint8))
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match=r"holds images of shape \(3, 28, 28\); this model translates \(1, 28, 28\)"):
        sample(compose([f"run={tmp_path / 'run'}", f"out={again}", f"input={tmp_path / 'rgb.npz'}", "device=cpu"],
                       "sample"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40), 60 * i, np.uint8)).save(folder / f"{i}.png")
    png = tmp_path / "t.png"
    sample(compose([f"run={tmp_path / 'run'}", f"out={png}", f"input={folder}", "device=cpu"], "sample"))
    assert png.is_file()


@pytest.mark.slow
def test_cli_trains_cgan_and_samples_labels(mnist_root, tmp_path):
    r = run_cli(["train", "model=cgan", "dataset=fashion_mnist", f"dataset.root={mnist_root}", *TINY, *nets_for(NETS, "image"),
                 f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(["sample", f"run={tmp_path / 'run'}", "labels=3", "num_samples=4", f"out={tmp_path / 'x.npz'}"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "x.npz")["labels"].tolist() == [3, 3, 3, 3]
