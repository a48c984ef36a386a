"""The dataset config schema: the config layer registers it, the unpaired loader types each domain with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


# Image folders: an image of more pixels is refused by its header, before decoding. 4096 x 4096 decodes
# to 48 MB; a crafted PNG of a few kB can claim far more (a decompression bomb).
MAX_PIXELS = 4096 * 4096


@dataclass
class DatasetConfig:
    name: str = "mnist"
    _target_: str = "genlab.data.images.torchvision_dataset"
    root: str = "data"
    image_size: Optional[int] = None
    channels: Optional[int] = None
    download: bool = True
    classes: Optional[list[int]] = None
    binarize: Optional[str] = None
    limit: Optional[int] = None
    path: Optional[str] = None
    max_pixels: Optional[int] = MAX_PIXELS  # null: no limit
    test_fraction: float = 0.1
    n_train: int = 100000
    n_test: int = 10000
    extra: dict[str, Any] = field(default_factory=dict)
    # unpaired two-domain data (CycleGAN): each a dataset node, e.g. {name: fashion_mnist, classes: [7]}
    # or {path: /data/horse2zebra/trainA}; keys not given are taken from this node
    domain_a: Optional[dict[str, Any]] = None
    domain_b: Optional[dict[str, Any]] = None
