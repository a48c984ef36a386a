"""The metric table: well-formed rows, directions from the rows (not name suffixes), a new metric as one
row plus its score function, and the feature-network protocol."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import GenlabError
from genlab.metrics import table
from genlab.metrics.records import COSTS, DIRECTIONS, Entry, EvalSettings, FeatureNet, Metric
from tests.conftest import compose


def test_every_row_is_well_formed_and_keys_are_unique():
    keys = [k for m in table.METRICS for k in m.keys]
    assert len(keys) == len(set(keys))
    for m in table.METRICS:
        assert m.cost in COSTS and all(d in DIRECTIONS for d in m.keys.values()), m.name
        module, function = m.score.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), m.name
        assert all(hasattr(EvalSettings(), f) for f in m.settings), m.name


def test_directions_come_from_the_rows():
    assert table.better("fid[lenet-mnist]") == "lower" and table.better("coverage[points]") == "higher"
    assert table.better("kid_std[points]") == "" and table.better("nn_ratio") == "~1"
    assert table.better("test_bits_per_dim") == "lower" and table.better("test_nll_nats") == "lower"
    # no suffix matching: a training scalar that merely ends like a metric has no direction
    assert table.better("vae/kl") == "" and table.better("my_fid") == "" and table.better("modes_x") == ""
    with pytest.raises(GenlabError, match="unknown metric fidd; choose from fid, kid"):
        table.metric("fidd")


def mean_norm(s):
    """A test metric: the mean norm of the set (and for the floor of held-out data)."""
    return {"mean_norm": Entry(float(s.x.flatten(1).norm(dim=1).mean()), len(s.x), extra={"floor": s.floor})}


def test_a_new_metric_is_one_row_and_one_function(monkeypatch):
    from genlab import data as data_lib
    from genlab.metrics.evaluator import Evaluator

    row = Metric("mean_norm", {"mean_norm": "lower"}, "cheap", table.anywhere, f"{__name__}:mean_norm")
    monkeypatch.setitem(table.BY_NAME, "mean_norm", row)
    data = data_lib.build(compose(["dataset=grid25", "dataset.n_train=64", "dataset.n_test=32"]).dataset)
    ev = Evaluator(data, EvalSettings(num_samples=16), metrics=["mean_norm"])
    x = torch.full((16, 2), 3.0) * torch.tensor([1.0, 0.0])
    out = ev.score(x, ev.groups(), model=object())
    assert out["mean_norm"].value == pytest.approx(3.0) and out["mean_norm"].extra["floor"] is False
    floor = ev.floor(["mean_norm"])["mean_norm"]
    held = data.test_x[:16]
    assert floor.extra["floor"] is True and floor.num_samples == 16
    assert 0 < floor.value < held.norm(dim=1).max() + 1e-6
    assert table.better("mean_norm") == "lower"


def test_periodic_evaluation_runs_the_cheap_rows_unless_asked():
    from genlab import data as data_lib
    from genlab.metrics.evaluator import Evaluator

    data = data_lib.build(compose(["dataset=grid25", "dataset.n_train=64", "dataset.n_test=32"]).dataset)

    class Toy(torch.nn.Module):
        family, conditional, slow_sampling = "adversarial", False, False

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def sample(self, n, generator=None, **kw):
            return torch.randn(n, 2, generator=generator)

    got = Evaluator(data, EvalSettings(num_samples=20))(Toy(), data, 0)
    cheap = {m.name for m in table.METRICS if m.cost == "cheap"}
    assert {"fid[points]", "kid[points]", "modes"} <= set(got) and "coverage[points]" not in got
    assert "prdc" not in cheap and "memorization" not in cheap and "nn_ratio" not in got
    asked = Evaluator(data, EvalSettings(num_samples=20), metrics=["prdc"])(Toy(), data, 0)
    assert set(asked) == {"precision[points]", "recall[points]", "density[points]", "coverage[points]"}


def test_feature_networks_follow_one_protocol(tmp_path):
    from genlab.metrics import featurenet as fnet
    from genlab.metrics.evaluator import PointFeatures

    net = fnet.FeatureNet(fnet.LeNet(1, 8, 3, width=4, feature_dim=6), fnet.Recipe("d", (1, 8, 8), 3, 10), 0.5,
                          tmp_path / "n.pt")
    for n in (PointFeatures(), net):
        assert isinstance(n, FeatureNet)
    feats, probs = net.embed(torch.zeros(5, 1, 8, 8))
    assert feats.shape == (5, 6) and probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))
