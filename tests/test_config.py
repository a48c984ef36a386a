"""Config composition of every group option, type checks at compose time, semantic validation."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from genlab.cli import group_options
from genlab.config import validate
from genlab.errors import GenlabError
from tests.conftest import compose, run_cli


@pytest.mark.parametrize("group", ["model", "dataset", "optimizer", "trainer"])
def test_every_group_option_composes(group):
    options = group_options(group)
    assert options, f"no options in configs/{group}"
    for name in options:
        cfg = compose([f"{group}={name}"])
        assert cfg[group] is not None
        OmegaConf.to_yaml(cfg, resolve=True)  # every interpolation resolves


def test_defaults_and_paper_hyperparameters():
    cfg = compose([])
    assert cfg.model.name == "wgan_gp" and cfg.dataset.name == "mnist"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.optimizer.lr == pytest.approx(1e-4) and list(cfg.optimizer.betas) == [0.0, 0.9]
    assert cfg.model.gp_weight == 10.0 and cfg.model.n_critic == 5

    wgan = compose(["model=wgan"])
    assert wgan.optimizer._target_ == "torch.optim.RMSprop" and wgan.optimizer.lr == pytest.approx(5e-5)
    assert wgan.model.clip == pytest.approx(0.01) and wgan.model.n_critic == 5

    gan = compose(["model=gan"])
    assert gan.optimizer.lr == pytest.approx(2e-4) and list(gan.optimizer.betas) == [0.5, 0.999]
    # a command-line override beats the model's recipe
    assert compose(["model=wgan", "optimizer.lr=1e-3"]).optimizer.lr == pytest.approx(1e-3)


def test_trainer_types_are_checked_at_compose_time():
    with pytest.raises(Exception, match="max_steps"):
        compose(["trainer.max_steps=abc"])
    with pytest.raises(Exception):
        compose(["trainer.nosuch=1"])
    assert compose(["trainer.precision=16"]).trainer.precision == "16"  # int coerced to the str field


@pytest.mark.parametrize("overrides, message", [
    (["model.n_critic=0"], "n_critic must be >= 1"),
    (["optimizer.lr=0"], "optimizer.lr must be > 0"),
    (["optimizer.lr=-1e-3"], "optimizer.lr must be > 0"),
    (["trainer.batch_size=0"], "batch_size must be >= 1"),
    (["trainer.precision=8"], "precision must be one of"),
    (["trainer.device=tpu"], "trainer.device must be"),
    (["dataset.image_size=30"], "image size 30 is not supported"),
    (["model.loss=nosuch"], "model.loss=nosuch is unknown"),
    (["+model.nosuch=1"], "nosuch"),
    (["model.z_dim=abc"], "z_dim"),
    (["model=realnvp", "model.n_scales=4"], "n_scales"),
    (["model=vae", "model.decoder_dist=poisson"], "decoder_dist"),
    (["dataset=fashion_mnist", "dataset.n_train=2000"], r"dataset.n_train=2000 sizes generated datasets .* use "
                                                        r"dataset.limit=2000"),
    (["dataset=mnist", "dataset.n_test=50"], "dataset.n_test=50 sizes generated datasets"),
    (["trainer.recipe=gpu"], "trainer.recipe must be one of auto, paper, cpu; got gpu"),
    (["model=ddpm", "dataset=fashion_mnist", "model.net.hidden=512"],
     "model.net.hidden=512 is not a setting of the unet denoiser on image data .* or set model.net.arch=mlp"),
    (["model=flow_matching", "dataset=grid25", "model.net.num_res_blocks=3"],
     "model.net.num_res_blocks=3 is not a setting of the mlp denoiser on points data"),
])
def test_semantic_validation(overrides, message):
    with pytest.raises(GenlabError, match=message):
        validate(compose(overrides))


# The (model, dataset) pairs that must refuse, with what they must say; every other pair must validate.
REFUSED = {
    ("cgan", "grid25"): "no class labels", ("acgan", "grid25"): "no class labels",
    ("cyclegan", "grid25"): "two unpaired image domains", ("cyclegan", "fashion_mnist"): "two unpaired image domains",
    ("pixelcnn", "grid25"): "needs image data", ("vqvae", "grid25"): "needs image data",
    # a second stage needs its first stage's run folder, which no composed config names
    ("vqvae_prior", "grid25"): "needs model.vqvae_run", ("vqvae_prior", "fashion_mnist"): "needs model.vqvae_run",
}
SECOND_STAGES = {"vqvae_prior"}


def test_generated_datasets_take_their_sizes():
    validate(compose(["dataset=grid25", "dataset.n_train=2000", "dataset.n_test=100"]))
    validate(compose(["model=dcgan", "dataset=stacked_fashion_mnist", "dataset.n_train=2000"]))


def test_valid_configs_pass_validation():
    checked = set()
    for model in group_options("model"):
        for dataset in ("grid25", "fashion_mnist", "unpaired_sneaker_sandal" if model == "cyclegan" else None):
            if dataset is None:
                continue
            cfg = compose([f"model={model}", f"dataset={dataset}"])
            expected = REFUSED.get((model, dataset))
            if expected is None:
                validate(cfg)  # any GenlabError fails the test
                checked.add(model)
            else:
                with pytest.raises(GenlabError, match=expected):
                    validate(cfg)
    assert checked == set(group_options("model")) - SECOND_STAGES  # every other model validates on some dataset


def test_cli_unknown_model_lists_models(tmp_path):
    r = run_cli(["train", "model=nosuch"], tmp_path)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "unknown model 'nosuch'" in lines[0] and "wgan_gp" in lines[0] and "vae" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "trainer.max_steps=abc"], "trainer.max_steps"),
    (["train", "model.n_critic=0"], "n_critic must be >= 1"),
    (["train", "dataset=nosuch"], "unknown dataset 'nosuch'"),
    (["nosuch"], "unknown command 'nosuch'"),
    (["sample"], "needs run="),
    (["sample", "run=does/not/exist"], "no checkpoint at"),
    (["train", "-m", "model=gan,nosuch"], "unknown model 'nosuch'"),
    (["train", "-m", "seed=0,1", "model.n_critic=0,1"], "n_critic must be >= 1"),
    (["train", "model=dcgan", "dataset=fashion_mnist", "model.generator.depth=6"],
     "model.generator.depth=6 is not a setting of the conv generator"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    r = run_cli(args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize("over, dataset, message", [
    ("model.generator.depth=6", "fashion_mnist", "model.generator.depth=6 is not a setting of the conv generator on "
     "image data (it takes base_channels, norm, spectral_norm); drop it or set model.generator.arch=mlp"),
    ("model.discriminator.base_channels=8", "grid25", "model.discriminator.base_channels=8 is not a setting of the mlp "
     "discriminator on points data"),
    ("model.generator.spectral_norm=true", "grid25", "model.generator.spectral_norm=True is not a setting of the mlp "
     "generator"),
])
def test_network_settings_a_network_does_not_take_are_errors(over, dataset, message):
    with pytest.raises(GenlabError) as e:
        validate(compose(["model=wgan_gp", f"dataset={dataset}", over]))
    assert message in str(e.value)
    # the family's settings (equal to the defaults) and the ones the network takes still pass
    validate(compose(["model=wgan_gp", f"dataset={dataset}", "model.generator.norm=none"]))
    vae = compose(["model=vae", "dataset=fashion_mnist", "model.encoder.hidden=8"])
    with pytest.raises(GenlabError, match="model.encoder.hidden=8 is not a setting of the conv discriminator"):
        validate(vae)


def test_cli_help_lists_commands(tmp_path):
    r = run_cli(["--help"], tmp_path)
    assert r.returncode == 0
    for cmd in ("train", "sample"):
        assert f"  {cmd}" in r.stdout
    r = run_cli(["train", "--cfg", "job", "model=gan", "dataset=grid25"], tmp_path)
    assert r.returncode == 0 and "name: gan" in r.stdout and "name: grid25" in r.stdout


@pytest.mark.parametrize("model", group_options("model"))
def test_model_yaml_lists_every_option(model):
    """Every field of the model's Config appears in its YAML, so `model.key=value` works without '+'."""
    import dataclasses

    from genlab.config import model_class

    cfg = compose([f"model={model}"])
    cls = model_class(cfg)

    def missing(dc, node, prefix):
        out = []
        for f in dataclasses.fields(dc):
            if f.name not in node:
                out.append(prefix + f.name)
            elif dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
                out += missing(f.type, node[f.name], prefix + f.name + ".")
        return out

    top = missing(cls.Config, cfg.model, "model.")
    nested = [f"model.{f.name}.{g.name}" for f in dataclasses.fields(cls.Config)
              if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
              for g in dataclasses.fields(f.default_factory()) if f.name in cfg.model and g.name not in cfg.model[f.name]]
    assert not top + nested, f"configs/model/{model}.yaml lacks {top + nested}"


def test_eval_caps_bound_the_periodic_evaluation_and_debug_bounds_still_hold():
    """Diffusion on a CPU caps its periodic evaluation; the smaller of cap and trainer value applies."""
    from genlab.engine.budget import eval_bound

    cpu = compose(["model=ddpm", "dataset=fashion_mnist", "trainer.recipe=cpu"])
    assert [eval_bound(cpu.trainer, k) for k in ("samples", "nll_images", "nll_k")] == [250, 100, 20]
    paper = compose(["model=ddpm", "dataset=fashion_mnist", "trainer.recipe=paper"])
    assert [eval_bound(paper.trainer, k) for k in ("samples", "nll_images", "nll_k")] == [1000, 500, 100]
    debug = compose(["model=ddpm", "dataset=fashion_mnist", "trainer=debug", "trainer.recipe=cpu"])
    assert [eval_bound(debug.trainer, k) for k in ("samples", "nll_images", "nll_k")] == [64, 16, 4]
    open_ = compose(["model=ddpm", "dataset=fashion_mnist", "trainer.recipe=cpu", "trainer.eval_nll_images=null"])
    assert eval_bound(open_.trainer, "nll_images") == 100  # no trainer bound: the cap alone


SINGLE_BAD = ["trainer.max_steps=-1", "trainer.batch_size=0", "trainer.precision=8", "trainer.log_every=-1",
              "trainer.eval_samples=1", "trainer.grad_clip=0", "trainer.max_time=abc", "trainer.max_time_clock=gpu",
              "trainer.recipe=fast", "trainer.num_threads=0", "trainer.eval_caps.samples=1", "trainer.objective=nonsense",
              "trainer.device=tpu", "trainer.best_mode=up"]


@pytest.mark.parametrize("override", SINGLE_BAD)
def test_a_bad_trainer_value_on_the_command_line_fails_before_composing_as_it_fails_after(override):
    from genlab.config import check_given_settings

    with pytest.raises(GenlabError) as composed:
        validate(compose([override]))
    with pytest.raises(GenlabError) as given:
        check_given_settings(["model=vae", override, "dataset=mnist"])
    assert str(given.value) == str(composed.value)


@pytest.mark.parametrize("overrides", [
    ["trainer.best_metric=fid"],  # needs eval_every > 0, which an experiment file may set: checked after composing
    ["trainer.sync_batchnorm=true"],  # needs a CUDA device, named elsewhere
    ["trainer.max_steps=${oc.env:STEPS,-1}"], ["trainer.max_steps=-1,5"], ["trainer.max_steps=[1]"],  # not plain
    ["trainer.max_steps=abc"], ["trainer.nope=1"],  # the schema's errors: Hydra's composition names them
    ["model=vae", "trainer.max_steps=5", "trainer.eval_caps.samples=null"],
])
def test_values_checked_before_composing_are_only_those_that_fail_on_their_own(overrides):
    from genlab.config import TrainerConfig, _check_settings, check_given_settings

    check_given_settings(overrides)
    # the schema's defaults, which stand in for every value not given, pass every check
    _check_settings(OmegaConf.create({"trainer": OmegaConf.structured(TrainerConfig),
                                      "optimizer": {"lr": 1.0, "per_network": {}}}))


def test_the_metric_table_and_the_settings_checks_import_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom genlab.config import check_given_settings\nfrom genlab.metrics.table import better\n"
            "assert better('fid') == 'lower'\ntry:\n    check_given_settings(['trainer.objective=nonsense'])\n"
            "except Exception as e:\n    print(e)\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith("trainer.objective=nonsense is not a metric") and out[1] == "False"


def test_a_translator_refuses_an_evaluation_that_scores_samples():
    for over in ("trainer.eval_every=10", "trainer.eval_every_time=1m"):
        with pytest.raises(GenlabError, match="cyclegan translates images between two domains: there are no samples"):
            validate(compose(["model=cyclegan", "dataset=unpaired_sneaker_sandal", over]))
    validate(compose(["model=cyclegan", "dataset=unpaired_sneaker_sandal"]))
