"""GAN-family architectures: shapes at 28/32/64 px, the DCGAN rules, spectral norm, CycleGAN nets."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from genlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator, init_dcgan_weights, start_size
from genlab.nets.image2image import (
    PatchDiscriminator,
    ResidualBlock,
    ResnetGenerator,
    max_patch_layers,
    patch_output_size,
)
from genlab.nets.spectral import apply_spectral_norm, largest_singular_value

SHAPES = [(c, s, s) for s in (28, 32, 64) for c in (1, 3)]
CONV = (nn.Conv2d, nn.ConvTranspose2d)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _layers(module):
    """Leaf modules in forward order (the nets are Sequentials)."""
    return [m for m in module.modules() if not list(m.children())]


def _next_after(layers, i):
    return layers[i + 1] if i + 1 < len(layers) else None


# ---------------------------------------------------------------------------------------------------
# DCGAN


@pytest.mark.parametrize("size,expected", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (16, (4, 2)), (48, (6, 3))])
def test_start_size_rule(size, expected):
    assert start_size(size) == expected


@pytest.mark.parametrize("size", [7, 5, 9])
def test_start_size_rejects_sizes_without_a_halving(size):
    with pytest.raises(ValueError):
        start_size(size)


@pytest.mark.parametrize("shape", SHAPES)
def test_dcgan_shapes(shape):
    g = DCGANGenerator(z_dim=16, shape=shape, base_channels=8)
    d = DCGANDiscriminator(shape, base_channels=8)
    z = torch.randn(3, 16)
    x = g(z)
    assert x.shape == (3, *shape)
    assert x.abs().max() <= 1
    assert torch.equal(g(z.reshape(3, 16, 1, 1)), x)  # (N, z) and (N, z, 1, 1) are the same input
    assert d(x).shape == (3,)
    # Upsampling steps follow the start-size rule.
    s0, n = start_size(shape[1])
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == n + 1
    assert sum(isinstance(m, nn.Conv2d) for m in d.modules()) == n


def test_dcgan_generator_in_dim_takes_z_with_a_code():
    g = DCGANGenerator(z_dim=16, shape=(1, 28, 28), base_channels=8, in_dim=16 + 10)
    assert g(torch.randn(2, 26)).shape == (2, 1, 28, 28)
    with pytest.raises(RuntimeError):
        g(torch.randn(2, 16))


def test_dcgan_generator_options():
    shape = (1, 28, 28)
    g = DCGANGenerator(z_dim=8, shape=shape, base_channels=8, out_activation="none")  # a VAE decoder
    assert not any(isinstance(m, nn.Tanh) for m in g.modules())
    assert g(torch.randn(2, 8)).shape == (2, *shape)
    g = DCGANGenerator(z_dim=8, shape=shape, base_channels=8, norm="none", spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    assert all(parametrize.is_parametrized(m, "weight") for m in g.modules() if isinstance(m, CONV))
    with pytest.raises(ValueError):
        DCGANGenerator(z_dim=8, shape=shape, out_activation="sigmoid")


def test_dcgan_discriminator_features_and_heads():
    shape = (3, 32, 32)
    d = DCGANDiscriminator(shape, base_channels=8, out_dim=5, return_features=True)
    x = torch.randn(4, *shape)
    out, h = d(x)
    assert out.shape == (4, 5)
    assert h.shape == (4, d.feature_dim) == (4, 8 * 4 * 4 * 4)
    torch.testing.assert_close(d.features(x), h)
    # The head is a linear map on the features, so an auxiliary head can share the body.
    torch.testing.assert_close(out, d.head(d.features(x)))


def test_dcgan_generator_follows_the_rules():
    g = DCGANGenerator(z_dim=16, shape=(3, 64, 64), base_channels=8)
    layers = _layers(g)
    convs = [i for i, m in enumerate(layers) if isinstance(m, CONV)]
    assert all(isinstance(layers[i], nn.ConvTranspose2d) for i in convs)  # fractionally-strided only
    for i in convs[:-1]:
        assert isinstance(layers[i + 1], nn.BatchNorm2d)
        assert isinstance(layers[i + 2], nn.ReLU)
    # Output layer: no batch norm, straight into tanh.
    assert isinstance(_next_after(layers, convs[-1]), nn.Tanh)
    assert isinstance(layers[-1], nn.Tanh)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == len(convs) - 1
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.LeakyReLU)) for m in layers)
    # Channels halve on the way up: 8 * 2^3 at 4x4 down to 8 before the output layer.
    assert [layers[i].out_channels for i in convs] == [64, 32, 16, 8, 3]


@pytest.mark.parametrize("norm,norm_type", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm),
                                            ("instance", nn.InstanceNorm2d)])
def test_dcgan_discriminator_follows_the_rules(norm, norm_type):
    d = DCGANDiscriminator((1, 64, 64), base_channels=8, norm=norm)
    layers = _layers(d)
    convs = [i for i, m in enumerate(layers) if isinstance(m, CONV)]
    assert all(isinstance(layers[i], nn.Conv2d) and layers[i].stride == (2, 2) for i in convs)  # strided
    # Input layer: no normalisation.
    first = layers[convs[0] + 1]
    assert isinstance(first, nn.LeakyReLU) and first.negative_slope == 0.2
    for i in convs[1:]:
        assert isinstance(layers[i + 1], norm_type)
        assert isinstance(layers[i + 2], nn.LeakyReLU) and layers[i + 2].negative_slope == 0.2
    assert sum(isinstance(m, norm_type) for m in layers) == len(convs) - 1
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.ReLU)) for m in layers)
    if norm == "layer":
        assert all(m.num_groups == 1 for m in layers if isinstance(m, nn.GroupNorm))


def test_dcgan_discriminator_without_norm():
    d = DCGANDiscriminator((1, 28, 28), base_channels=8, norm="none")
    assert not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) for m in d.modules())
    with pytest.raises(ValueError):
        DCGANDiscriminator((1, 28, 28), norm="bogus")


def test_dcgan_init_std():
    g = DCGANGenerator(z_dim=100, shape=(3, 64, 64), base_channels=64)
    d = DCGANDiscriminator((3, 64, 64), base_channels=64)
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, (*CONV, nn.Linear)) and m.weight.numel() > 10_000:
                assert m.weight.mean().abs() < 2e-3
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.05)
            if isinstance(m, nn.BatchNorm2d):
                assert m.weight.mean().item() == pytest.approx(1.0, abs=0.02)
                assert (m.bias == 0).all()


def test_init_dcgan_weights_reinitialises_any_module():
    layer = nn.Conv2d(64, 64, 3)
    init_dcgan_weights(layer)
    assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (layer.bias == 0).all()


# ---------------------------------------------------------------------------------------------------
# Spectral normalisation


def _wrapped(module):
    return [m for m in module.modules() if isinstance(m, (*CONV, nn.Linear))]


def test_spectral_norm_brings_each_layer_to_unit_sigma():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.Flatten(),
                        nn.Linear(8 * 16 * 16, 10))
    with torch.no_grad():
        for m in _wrapped(net):
            m.weight.mul_(10)  # large weights: sigma well above 1 before normalisation
    assert all(largest_singular_value(m) > 3 for m in _wrapped(net))
    apply_spectral_norm(net)
    assert all(parametrize.is_parametrized(m, "weight") for m in _wrapped(net))
    net.train()
    x = torch.randn(2, 3, 8, 8)
    for _ in range(20):  # each train-mode forward runs one power iteration
        net(x)
    net.eval()
    for m in _wrapped(net):
        assert largest_singular_value(m) == pytest.approx(1.0, abs=0.02)
    apply_spectral_norm(net)  # idempotent: no second parametrisation
    assert all(len(m.parametrizations.weight) == 1 for m in _wrapped(net))


def test_largest_singular_value_is_exact_and_has_no_side_effect():
    layer = nn.Linear(6, 4)
    assert largest_singular_value(layer) == pytest.approx(torch.linalg.svdvals(layer.weight.double())[0].item())
    conv_t = nn.ConvTranspose2d(5, 3, 4)
    # For a transposed conv the matrix is (out, in * k * k), the one spectral_norm normalises.
    matrix = conv_t.weight.detach().transpose(0, 1).reshape(3, -1).double()
    assert largest_singular_value(conv_t) == pytest.approx(torch.linalg.svdvals(matrix)[0].item())
    apply_spectral_norm(layer)
    layer.train()
    sn = layer.parametrizations.weight[0]
    u = sn._u.clone()
    largest_singular_value(layer)
    assert torch.equal(sn._u, u) and sn.training


def test_dcgan_discriminator_with_spectral_norm():
    d = DCGANDiscriminator((3, 32, 32), base_channels=8, norm="none", spectral_norm=True)
    assert all(parametrize.is_parametrized(m, "weight") for m in _wrapped(d))
    x = torch.randn(4, 3, 32, 32)
    for _ in range(10):
        d(x)
    for m in _wrapped(d):
        assert largest_singular_value(m) == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------------------------------------------
# CycleGAN / PatchGAN


@pytest.mark.parametrize("size,in_ch,out_ch", [(28, 1, 3), (32, 3, 1), (64, 3, 3), (28, 1, 1)])
def test_resnet_generator_shapes(size, in_ch, out_ch):
    g = ResnetGenerator(in_ch, out_ch, base=4, n_blocks=2, image_size=size)
    assert g.n_down == 2
    y = g(torch.randn(2, in_ch, size, size))
    assert y.shape == (2, out_ch, size, size)
    assert y.abs().max() <= 1


def test_resnet_generator_follows_the_paper():
    g = ResnetGenerator(3, 3, base=4, n_blocks=9)
    layers = list(g.net)
    assert isinstance(layers[0], nn.ReflectionPad2d) and layers[0].padding == (3, 3, 3, 3)
    assert layers[1].kernel_size == (7, 7) and layers[1].out_channels == 4  # c7s1-b
    convs = [m for m in layers if isinstance(m, CONV)]
    assert [m.out_channels for m in convs] == [4, 8, 16, 8, 4, 3]  # c7s1-b, d2b, d4b, u2b, ub, c7s1-3
    assert [m.stride for m in convs] == [(1, 1), (2, 2), (2, 2), (2, 2), (2, 2), (1, 1)]
    blocks = [m for m in layers if isinstance(m, ResidualBlock)]
    assert len(blocks) == 9 and all(b.block[1].in_channels == 16 for b in blocks)
    assert isinstance(layers[-1], nn.Tanh)
    # c7s1, d x 2, R x 9 (two each), u x 2; none on the output layer
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in g.modules()) == 1 + 2 + 2 * 9 + 2


def test_resnet_generator_uses_the_halvings_the_size_allows():
    g = ResnetGenerator(1, 1, base=4, n_blocks=1, image_size=30)  # 30 -> 15: one halving
    assert g.n_down == 1
    assert g(torch.randn(1, 1, 30, 30)).shape == (1, 1, 30, 30)
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(1, 1, base=4, n_blocks=1)(torch.randn(1, 1, 30, 30))


@pytest.mark.parametrize("size", [28, 32, 64])
def test_resnet_generator_with_zeroed_blocks_is_the_net_without_them(size):
    g = ResnetGenerator(3, 3, base=4, n_blocks=3, image_size=size).eval()
    blocks = [m for m in g.net if isinstance(m, ResidualBlock)]
    with torch.no_grad():
        for b in blocks:
            for p in b.parameters():
                p.zero_()
    x = torch.randn(1, 3, size, size)
    h = torch.randn(1, 16, size // 4, size // 4)
    for b in blocks:
        torch.testing.assert_close(b(h), h)  # a zeroed residual block is the identity
    without = nn.Sequential(*[m for m in g.net if not isinstance(m, ResidualBlock)])
    y = g(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, without(x))


@pytest.mark.parametrize("size,n_layers,side", [(28, 3, 1), (32, 3, 2), (64, 3, 6), (256, 3, 30), (16, 2, 2),
                                                (8, 1, 2)])
def test_patch_rule(size, n_layers, side):
    assert max_patch_layers(size) == n_layers
    assert patch_output_size(size, n_layers) == side


@pytest.mark.parametrize("in_ch", [1, 3])
@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_patch_discriminator_shapes(size, in_ch):
    d = PatchDiscriminator(in_ch, base=4, image_size=size)
    side = patch_output_size(size, d.n_layers)
    assert side >= 1
    assert d(torch.randn(2, in_ch, size, size)).shape == (2, 1, side, side)


def test_patch_discriminator_rejects_tiny_images():
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(1, image_size=4)


def test_patch_discriminator_receptive_field_is_70():
    # Without normalisation (instance norm mixes the whole image) one logit sees a 70x70 patch.
    d = PatchDiscriminator(1, base=2, n_layers=3, norm="none")
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    out = d(x)
    assert out.shape == (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    cols = x.grad[0, 0].abs().sum(0).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    layers = _layers(d)
    first = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)][0]
    assert isinstance(layers[first + 1], nn.LeakyReLU)  # C64 has no normalisation
