"""Architectures only (no losses): a registry from `arch` names to generator/discriminator classes.

`arch: auto` picks the MLP family for vector data and the DCGAN-style conv family for images, so
one model config serves both toy and image datasets.
"""

from __future__ import annotations

from hydra.utils import get_class

from genlab.errors import GenlabError

ARCHS = {
    "mlp": ("genlab.nets.mlp.MLPGenerator", "genlab.nets.mlp.MLPDiscriminator"),
    "conv": ("genlab.nets.dcgan.DCGANGenerator", "genlab.nets.dcgan.DCGANDiscriminator"),
}


#: denoisers of diffusion and flow matching: net(x_t, t, y) -> a tensor of x's shape
DENOISERS = {"mlp": "genlab.nets.unet.MLPDenoiser", "unet": "genlab.nets.unet.UNet"}


def denoiser(net_cfg, spec, num_classes: int | None = None):
    """The denoiser named by net_cfg.arch (auto: mlp for points, unet for images) for data of spec."""
    arch = net_cfg.arch
    if arch == "auto":
        arch = "mlp" if spec.kind == "points" else "unet"
    if arch not in DENOISERS:
        raise GenlabError(f"unknown denoiser architecture '{arch}'; choose one of auto, {', '.join(DENOISERS)}")
    return _build(DENOISERS[arch], net_cfg, shape=tuple(spec.shape), num_classes=num_classes)


def resolve_arch(arch: str, kind: str) -> str:
    """`auto` -> mlp for points, conv for images; other names are checked against ARCHS."""
    if arch == "auto":
        return "mlp" if kind == "points" else "conv"
    if arch not in ARCHS:
        raise GenlabError(f"unknown architecture '{arch}'; choose one of auto, {', '.join(ARCHS)}")
    return arch


ROLES = ("generator", "discriminator")  # the two classes of each ARCHS entry


def _items(net_cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(net_cfg, resolve=True) if not isinstance(net_cfg, dict) else dict(net_cfg)


def _build(cls_path: str, net_cfg, **given):
    """Instantiate cls with the config keys it declares in `settings` (a config serves several archs)."""
    cls = get_class(cls_path)
    kw = {k: v for k, v in _items(net_cfg).items() if k in cls.settings}
    return cls(**{**kw, **given})


def settings_problem(net_cfg, kind: str, role: str, where: str, defaults) -> str | None:
    """Why a network config sets an option its architecture does not take (None if it does not).

    One config serves several architectures (arch: auto), so an option the resolved network does not
    take is an error only when it differs from `defaults` (the family's settings): `where.depth=6` on
    images fails here rather than doing nothing."""
    arch = resolve_arch(net_cfg.arch, kind)
    cls = get_class(ARCHS[arch][ROLES.index(role)])
    items = _items(net_cfg)
    if items.get("widths") and "widths" in cls.settings:  # widths replace hidden x depth: a set one would do nothing
        for key in ("hidden", "depth"):
            if key in items and items[key] != getattr(defaults, key, items[key]):
                return (f"{where}.{key}={items[key]} has no effect while {where}.widths={list(items['widths'])} is set "
                        f"(the CPU recipe's MLP widths, trainer.recipe); give {where}.widths=[...] or {where}.widths=null")
    classes = {a: get_class(paths[ROLES.index(role)]) for a, paths in ARCHS.items()}
    return _unused_setting(items, arch, classes, f"{arch} {role} on {kind} data", where, defaults)


def _unused_setting(items: dict, arch: str, classes: dict, what: str, where: str, defaults) -> str | None:
    """The first setting in `items` that the class of `arch` does not take and that differs from `defaults`."""
    cls = classes[arch]
    for key, value in items.items():
        if key == "arch" or key in cls.settings or value == getattr(defaults, key, value):
            continue
        others = [a for a, c in classes.items() if key in c.settings]
        hint = f" or set {where}.arch={others[0]}" if others else ""
        return (f"{where}.{key}={value} is not a setting of the {what} (it takes "
                f"{', '.join(cls.settings)}); drop it{hint}")
    return None


def denoiser_settings_problem(net_cfg, kind: str, where: str, defaults) -> str | None:
    """settings_problem for a diffusion model's denoiser: `model.net.hidden=512` on images (the U-Net)
    is an error, not a silent no-op."""
    arch = net_cfg.arch if net_cfg.arch != "auto" else ("mlp" if kind == "points" else "unet")
    classes = {a: get_class(path) for a, path in DENOISERS.items()}
    return _unused_setting(_items(net_cfg), arch, classes, f"{arch} denoiser on {kind} data", where, defaults)


def generator(net_cfg, spec, z_dim: int, **extra):
    """The generator/decoder named by net_cfg.arch mapping z_dim -> spec.shape."""
    arch = resolve_arch(net_cfg.arch, spec.kind)
    if "norm" in net_cfg and net_cfg.norm == "auto":
        extra.setdefault("norm", resolve_norm("auto", arch))
    if arch == "mlp" and spec.kind == "image":  # images in [-1, 1], as the conv generator's tanh gives
        extra.setdefault("out_activation", "tanh")
    return _build(ARCHS[arch][0], net_cfg, z_dim=z_dim, shape=tuple(spec.shape), **extra)


def resolve_norm(norm: str, arch: str) -> str:
    """`norm: auto` for a discriminator: batch norm in conv nets (the DCGAN rule), none in MLPs.

    An MLP discriminator on points sees real and fake batches separately; batch norm would
    standardise each and hide exactly what tells them apart (their spread and position).
    """
    if norm != "auto":
        return norm
    return "batch" if arch == "conv" else "none"


def discriminator(net_cfg, spec, **extra):
    """The discriminator/critic/encoder named by net_cfg.arch reading spec.shape."""
    arch = resolve_arch(net_cfg.arch, spec.kind)
    if "norm" in net_cfg and net_cfg.norm == "auto":
        extra.setdefault("norm", resolve_norm("auto", arch))
    return _build(ARCHS[arch][1], net_cfg, shape=tuple(spec.shape), **extra)
