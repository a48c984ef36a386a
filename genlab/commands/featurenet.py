"""genlab featurenet dataset=NAME: train (or find cached) the domain classifier used by genlab eval."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from genlab.commands.common import user_errors
from genlab.config import register_configs

register_configs()


def featurenet(cfg: DictConfig):
    """The `genlab featurenet` command; returns the FeatureNet."""
    from genlab import data as data_lib
    from genlab import progress
    from genlab.device import resolve_device
    from genlab.metrics import featurenet as fnet

    progress.configure(cfg.progress)
    data = data_lib.full_dataset(cfg.dataset)
    fn = OmegaConf.to_container(cfg.featurenet, resolve=True)
    cache = fn.pop("cache_dir", None)
    recipe = fnet.recipe_for(data, **fn)
    net = fnet.load_or_train(data, recipe, cache, resolve_device(str(cfg.device)), retrain=bool(cfg.retrain))
    print(f"feature network {net.id}: test accuracy {net.test_accuracy:.4f} ({net.path})")
    return net


@hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name="featurenet")
def main(cfg: DictConfig) -> None:
    with user_errors():
        featurenet(cfg)


if __name__ == "__main__":
    main()
