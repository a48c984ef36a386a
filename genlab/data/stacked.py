"""Stacked MNIST (Metz et al. 2017; PacGAN Table 2): three random digits as the R, G and B channels.

Each image's mode is the triple of its digits' classes, 1,000 in all, counted on samples by a
classifier of the base dataset applied to each channel. `dataset=stacked_fashion_mnist` does the same
with Fashion-MNIST (offline here). The images are drawn once from the base dataset's splits with a
fixed generator (seeded by the run's seed), so a run and its evaluation see the same data.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from genlab.data.base import Data, Spec
from genlab.errors import GenlabError

BASES = ("mnist", "fashion_mnist")


def base_config(cfg):
    """The dataset node of the base dataset (its name from dataset.extra.base, the rest from this node)."""
    base = (cfg.extra or {}).get("base")
    if base not in BASES:
        raise GenlabError(f"dataset.extra.base must be one of {', '.join(BASES)}, got {base}")
    node = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create({**{k: v for k, v in node.items() if k not in ("extra", "n_train", "n_test")},
                             "name": base, "_target_": "genlab.data.images.torchvision_dataset", "extra": {}})


def stack(x: torch.Tensor, y: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 3, H, W) whose channels are random images of x (N, 1, H, W); labels 100 a + 10 b + c."""
    idx = torch.randint(len(x), (n, 3), generator=g)
    images = x[idx.reshape(-1), 0].reshape(n, 3, *x.shape[2:])
    labels = y[idx]
    return images, labels[:, 0] * 100 + labels[:, 1] * 10 + labels[:, 2]


def stacked(cfg, seed: int = 0) -> Data:
    """n_train / n_test stacked images from the base dataset's train / test split."""
    from genlab.data.images import torchvision_dataset

    base = torchvision_dataset(base_config(cfg), seed=seed)
    if base.shape[0] != 1:
        raise GenlabError(f"stacking needs one-channel base images, got {base.shape[0]} channels")
    g = torch.Generator().manual_seed(20_000 + seed)
    xtr, ytr = stack(base.raw("train").cpu(), base.train_y.cpu(), int(cfg.n_train), g)
    xte, yte = stack(base.raw("test").cpu(), base.test_y.cpu(), int(cfg.n_test), g)
    # The 1,000 triples are the modes; no num_classes, so no 1,000-way feature network is trained on them:
    # the base dataset's classifier reads each channel (the stacked metric of genlab eval), so the base
    # Data travels along (metrics take what they need as arguments and import no data loader).
    return Data(cfg.name, "image", xtr, None, xte, None, seed=seed, stacked_base=base,
                stacked_labels=(ytr, yte), num_modes=1000)


def _spec(cfg) -> Spec:
    from genlab.data.images import torchvision_dataset

    s = torchvision_dataset.spec(base_config(cfg))
    return Spec("image", (3, *s.shape[1:]), None)


def _check(cfg) -> None:
    from genlab.data.images import check_present

    check_present(base_config(cfg))


stacked.sized = True  # dataset.n_train / n_test examples are generated
stacked.spec = _spec
stacked.check = _check
