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


def _build(cls_path: str, net_cfg, **given):
    """Instantiate cls with the config keys its constructor accepts (a config serves several archs)."""
    import inspect

    from omegaconf import OmegaConf

    cls = get_class(cls_path)
    kw = OmegaConf.to_container(net_cfg, resolve=True) if not isinstance(net_cfg, dict) else dict(net_cfg)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in kw.items() if k != "arch" and (takes_any or k in params)}
    return cls(**{**kw, **given})


def generator(net_cfg, spec, z_dim: int, **extra):
    """The generator/decoder named by net_cfg.arch mapping z_dim -> spec.shape."""
    arch = resolve_arch(net_cfg.arch, spec.kind)
    if "norm" in net_cfg and net_cfg.norm == "auto":
        extra.setdefault("norm", resolve_norm("auto", arch))
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
