"""Unpaired two-domain image data for image-to-image translation (CycleGAN).

`dataset.domain_a` and `dataset.domain_b` are each a dataset node: a torchvision dataset with an
optional class filter ({name: fashion_mnist, classes: [7]}) or a folder of images ({path: DIR}).
Keys a domain does not set (root, image_size, channels, limit, ...) come from the dataset node itself,
so both domains get the same image shape. A batch holds x from domain A and y from domain B, drawn
independently: the domains are unpaired.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from genlab.data.base import Data, Spec
from genlab.errors import GenlabError
from genlab.types import Batch

_OWN_KEYS = ("domain_a", "domain_b", "name", "_target_")


def domain_config(cfg, key: str):
    """The full dataset node of one domain: its own keys over the shared ones, with a loader picked."""
    from genlab.data.schema import DatasetConfig

    node = cfg.get(key)
    if not node:
        raise GenlabError(f"an unpaired dataset needs dataset.{key} (e.g. {{name: fashion_mnist, classes: [7]}} "
                          "or {path: /folder/of/images})")
    shared = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _OWN_KEYS}
    own = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    if "path" in own and not own["path"] and not own.get("name"):
        raise GenlabError(f"dataset={cfg.name} needs dataset.{key}.path=/folder/of/images")
    merged = {**shared, **own}
    if "_target_" not in own:
        merged["_target_"] = ("genlab.data.images.image_folder" if own.get("path")
                              else "genlab.data.images.torchvision_dataset")
    merged.setdefault("name", "image_folder" if own.get("path") else cfg.name)
    try:
        return OmegaConf.merge(OmegaConf.structured(DatasetConfig), merged)
    except Exception as e:  # noqa: BLE001 - OmegaConf validation errors
        raise GenlabError(f"dataset.{key}: {str(e).splitlines()[0]}") from None


class UnpairedData(Data):
    """Domain A is this Data's own train/test split; domain B is `self.b`. Batches: x ~ A, y ~ B."""

    def __init__(self, name: str, a: Data, b: Data, seed: int = 0):
        if a.shape != b.shape:
            raise GenlabError(f"the two domains have different image shapes {a.shape} and {b.shape}; "
                              "set dataset.image_size and dataset.channels")
        super().__init__(name, "image", a.raw("train"), None, a.raw("test"), None, seed=seed,
                         class_names=[a.name, b.name])
        self.b = b
        self.domain_names = (a.name, b.name)

    @property
    def spec(self) -> Spec:
        return Spec("image", self.shape, None, domains=2)

    def next(self, batch_size: int) -> Batch:
        return Batch(super().next(batch_size).x, self.b.next(batch_size).x)

    def shard(self, rank: int, world: int) -> None:
        super().shard(rank, world)
        self.b.shard(rank, world)

    def split(self, domain: str, split: str = "test"):
        """The float images in [-1, 1] of one domain ('a' or 'b') and split."""
        d = self if domain == "a" else self.b
        return d.test_x if split == "test" else d.train_x

    def to(self, device) -> "UnpairedData":
        super().to(device)
        self.b.to(device)
        return self

    def state_dict(self) -> dict:
        return {"a": super().state_dict(), "b": self.b.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state["a"])
        self.b.load_state_dict(state["b"])


def _describe(node) -> str:
    if node.get("path"):
        return str(node.path).rstrip("/").split("/")[-1]
    return f"{node.name}{list(node.classes) if node.classes is not None else ''}"


def unpaired(cfg, seed: int = 0) -> UnpairedData:
    """Two image datasets as domains A and B."""
    from genlab.data import build

    ca, cb = domain_config(cfg, "domain_a"), domain_config(cfg, "domain_b")
    a = build(ca, seed=seed)
    b = build(cb, seed=seed + 1)
    a.name, b.name = _describe(ca), _describe(cb)
    return UnpairedData(f"{_describe(ca)}<->{_describe(cb)}", a, b, seed=seed)


def _spec(cfg) -> Spec:
    from genlab.data import expected_spec

    sa, sb = expected_spec(domain_config(cfg, "domain_a")), expected_spec(domain_config(cfg, "domain_b"))
    if sa.shape != sb.shape:
        raise GenlabError(f"the two domains give different image shapes {sa.shape} and {sb.shape}; "
                          "set dataset.image_size and dataset.channels")
    return Spec("image", sa.shape, None, domains=2)


unpaired.spec = _spec


def _check(cfg) -> None:
    from genlab.data import check

    for key in ("domain_a", "domain_b"):
        check(domain_config(cfg, key))


unpaired.check = _check
