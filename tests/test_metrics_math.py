"""Numbers from genlab.metrics against closed forms, scipy, and brute-force loops."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from genlab.data.toy import GRID25_STD, RING8_STD, grid25_centers, ring8_centers
from genlab.metrics import (
    bits_per_dim, class_coverage, conditional_accuracy, feature_stats, fid_from_features, fid_from_stats,
    logmeanexp, memorization_ratio, mode_metrics, nats_from_bpd, nearest_neighbours,
)
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kid import kid
from genlab.metrics.prdc import prdc


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_closed_form(mu1, s1, mu2, s2) -> float:
    """Independent reference: tr((S1^1/2 S2 S1^1/2)^1/2) through symmetric eigendecompositions."""
    mu1, s1, mu2, s2 = (np.asarray(t, dtype=np.float64) for t in (mu1, s1, mu2, s2))
    r1 = psd_sqrt(s1)
    cross = psd_sqrt(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def mixture_samples(centers: torch.Tensor, std: float, n: int, g: torch.Generator) -> torch.Tensor:
    which = torch.randint(len(centers), (n,), generator=g)
    return centers[which] + std * torch.randn(n, 2, generator=g)


# ---- FID -----------------------------------------------------------------------------------------

def test_feature_stats_match_numpy_with_chunking():
    f = torch.randn(101, 6, generator=gen(0)) * 3 + 1
    mu, sigma = feature_stats(f, chunk=7)
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), f.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(f.double().numpy(), rowvar=False), rtol=1e-10)


def test_fid_of_a_set_against_itself_is_zero():
    g = gen(1)
    f = torch.randn(3000, 32, generator=g) @ torch.randn(32, 32, generator=g) + 5
    _, sigma = feature_stats(f)
    assert abs(fid_from_features(f, f)) <= 1e-6 * 2 * float(sigma.trace())


def test_fid_diagonal_covariances_elementwise_closed_form():
    g = gen(2)
    mu1, mu2 = (torch.randn(10, generator=g, dtype=torch.float64) for _ in range(2))
    v1, v2 = (torch.rand(10, generator=g, dtype=torch.float64) + 0.1 for _ in range(2))
    expected = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * (v1 * v2).sqrt()).sum())
    value = fid_from_stats(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert value == pytest.approx(expected, rel=1e-9)


def test_fid_general_covariances_match_eigh_closed_form():
    g = gen(3)
    mu1, mu2 = torch.randn(40, generator=g), torch.randn(40, generator=g)
    s1, s2 = random_spd(40, g), random_spd(40, g)
    expected = fid_closed_form(mu1, s1, mu2, s2)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # numpy inputs are accepted as well (reference statistics are stored as .npz).
    value = fid_from_stats(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert value == pytest.approx(expected, rel=1e-8)


def test_fid_rank_deficient_covariances_stay_finite_and_close():
    g = gen(4)
    a, b = (torch.randn(12, 3, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = a @ a.T, b @ b.T  # rank 3 in 12 dimensions: S1 S2 is singular
    mu = torch.zeros(12, dtype=torch.float64)
    value = fid_from_stats(mu, s1, mu, s2)
    assert math.isfinite(value)
    assert value == pytest.approx(fid_closed_form(mu, s1, mu, s2), rel=1e-4, abs=1e-4)


def test_fid_retries_with_eps_when_sqrtm_fails(monkeypatch):
    import genlab.metrics.frechet as frechet

    g = gen(24)
    mu = torch.zeros(6, dtype=torch.float64)
    s1, s2 = random_spd(6, g), random_spd(6, g)
    seen, real_sqrtm = [], frechet._sqrtm

    def flaky_sqrtm(a):  # scipy's sqrtm returning non-finite values for a (near-)singular product
        seen.append(a)
        return np.full_like(a, np.nan) if len(seen) == 1 else real_sqrtm(a)

    monkeypatch.setattr(frechet, "_sqrtm", flaky_sqrtm)
    eps = 1e-6
    value = fid_from_stats(mu, s1, mu, s2, eps=eps)
    offset = eps * np.eye(6)
    assert len(seen) == 2
    np.testing.assert_allclose(seen[1], (s1.numpy() + offset) @ (s2.numpy() + offset), rtol=1e-14)
    assert value == pytest.approx(fid_closed_form(mu, s1, mu, s2), abs=1e-4)


def test_fid_rejects_a_covariance_that_is_not_psd():
    with pytest.raises(ValueError, match="imaginary"):
        fid_from_stats(torch.zeros(2), torch.diag(torch.tensor([1.0, -1.0])),
                       torch.zeros(2), torch.eye(2))


def test_fid_from_gaussian_samples_converges_to_closed_form():
    g = gen(5)
    d, n = 4, 200_000
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    s1, s2 = random_spd(d, g), random_spd(d, g)
    x1 = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    x2 = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T
    expected = fid_closed_form(mu1, s1, mu2, s2)
    assert fid_from_features(x1, x2) == pytest.approx(expected, rel=0.02)


# ---- KID -----------------------------------------------------------------------------------------

def brute_force_mmd2(x, y, degree=3, gamma=None, coef=1.0) -> float:
    x, y = x.double().tolist(), y.double().tolist()
    d = len(x[0])
    gamma = 1.0 / d if gamma is None else gamma
    k = lambda a, b: (gamma * sum(p * q for p, q in zip(a, b)) + coef) ** degree  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kw", [{}, {"degree": 2, "gamma": 0.3, "coef": 0.5}])
def test_kid_matches_brute_force_mmd2(kw):
    g = gen(6)
    x, y = torch.randn(30, 5, generator=g), torch.randn(30, 5, generator=g) + 0.3
    # One subset of the full size is a permutation of each set: the estimate is the full-set MMD^2.
    out = kid(x, y, subsets=3, subset_size=1000, generator=gen(0), **kw)
    assert out["kid"] == pytest.approx(brute_force_mmd2(x, y, **kw), rel=1e-10)
    assert out["kid_std"] == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_equal_distributions():
    g = gen(7)
    unbiased, biased = [], []
    for _ in range(200):
        x, y = torch.randn(40, 4, generator=g), torch.randn(40, 4, generator=g)
        unbiased.append(kid(x, y, subsets=1, subset_size=40)["kid"])
        pairs = ((x, x), (y, y), (x, y))
        kx, ky, kxy = ((a.double() @ b.double().T / 4 + 1) ** 3 for a, b in pairs)
        biased.append(float(kx.mean() + ky.mean() - 2 * kxy.mean()))
    unbiased, biased = np.array(unbiased), np.array(biased)
    stderr = unbiased.std(ddof=1) / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 4 * stderr
    # The test has power: the biased (V-statistic) estimator is visibly positive on the same data.
    assert biased.mean() > 4 * biased.std(ddof=1) / np.sqrt(len(biased))


def test_kid_near_zero_for_equal_and_positive_for_shifted_distributions():
    g = gen(8)
    x, y = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    same = kid(x, y, subsets=30, subset_size=300)
    assert abs(same["kid"]) < 3 * same["kid_std"]
    shifted = kid(x, y + 0.5, subsets=30, subset_size=300)
    assert shifted["kid"] > 10 * max(shifted["kid_std"], abs(same["kid"]))


def test_kid_is_reproducible_and_leaves_global_rng_alone():
    g = gen(9)
    x, y = torch.randn(200, 8, generator=g), torch.randn(150, 8, generator=g)
    state = torch.get_rng_state()
    first = kid(x, y, subsets=5, subset_size=100)
    assert torch.equal(state, torch.get_rng_state())
    assert first == kid(x, y, subsets=5, subset_size=100)
    assert first == kid(x, y, subsets=5, subset_size=100, generator=gen(0))


# ---- Inception Score -----------------------------------------------------------------------------

def test_inception_score_is_k_for_confident_uniform_predictions():
    probs = torch.eye(10).repeat(100, 1)  # every split holds each class 10 times
    out = inception_score(probs, splits=10)
    assert out["is"] == pytest.approx(10.0, rel=1e-12)
    assert out["is_std"] == pytest.approx(0.0, abs=1e-12)


def test_inception_score_is_one_for_constant_predictions():
    probs = torch.softmax(torch.randn(10, generator=gen(10)), 0).repeat(1000, 1)
    assert inception_score(probs)["is"] == pytest.approx(1.0, abs=1e-12)


def test_inception_score_matches_scipy_entropy():
    probs = torch.distributions.Dirichlet(torch.full((7,), 0.3)).sample((500,)).double()
    probs = probs / probs.sum(1, keepdim=True)
    out = inception_score(probs, splits=5)
    scores = []
    for part in np.array_split(probs.numpy(), 5):
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(p, marginal) for p in part])))
    assert out["is"] == pytest.approx(np.mean(scores), rel=1e-10)
    assert out["is_std"] == pytest.approx(np.std(scores), rel=1e-8)


# ---- Precision / recall / density / coverage -----------------------------------------------------

def brute_force_prdc(real, fake, k):
    real, fake = real.double().tolist(), fake.double().tolist()
    dist = math.dist

    def radius(points, i):
        return sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    balls = [sum(dist(r, f) < r_real[i] for i, r in enumerate(real)) for f in fake]
    recall = [any(dist(r, f) < r_fake[j] for j, f in enumerate(fake)) for r in real]
    coverage = [min(dist(r, f) for f in fake) < r_real[i] for i, r in enumerate(real)]
    return {
        "precision": sum(b > 0 for b in balls) / len(fake),
        "recall": sum(recall) / len(real),
        "density": sum(balls) / (k * len(fake)),
        "coverage": sum(coverage) / len(real),
    }


@pytest.mark.parametrize("seed,k", [(11, 3), (12, 5)])
def test_prdc_matches_brute_force(seed, k):
    g = gen(seed)
    real = torch.randn(40, 3, generator=g)
    fake = torch.randn(30, 3, generator=g) * 1.3 + 0.4
    out = prdc(real, fake, k=k, chunk=7)  # small chunks: the chunk seams are exercised
    assert out == pytest.approx(brute_force_prdc(real, fake, k), abs=1e-12)


def test_prdc_identical_sets():
    real = torch.randn(200, 8, generator=gen(13))
    out = prdc(real, real.clone(), k=5, chunk=64)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0


def test_prdc_far_away_fake_set_scores_zero():
    real = torch.randn(200, 8, generator=gen(14))
    out = prdc(real, real + 1000.0)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_half_of_fakes_far_away_gives_precision_half():
    real = torch.randn(200, 8, generator=gen(15))
    fake = torch.cat([real[:100], real[100:] + 1000.0])
    out = prdc(real, fake)
    assert out["precision"] == 0.5


# ---- Toy mixtures --------------------------------------------------------------------------------

def test_canonical_geometries():
    ring = ring8_centers()
    assert ring.shape == (8, 2)
    torch.testing.assert_close(ring.norm(dim=1), torch.ones(8))
    assert torch.cdist(ring, ring).add(torch.eye(8)).min() > 0.7  # 8 distinct points, 45 deg apart
    grid = grid25_centers()
    assert grid.shape == (25, 2)
    axis = (-4, -2, 0, 2, 4)
    assert {tuple(p) for p in grid.tolist()} == {(a, b) for a in axis for b in axis}
    assert (RING8_STD, GRID25_STD) == (0.01, 0.05)


def test_exact_grid25_samples_capture_every_mode():
    samples = mixture_samples(grid25_centers(), GRID25_STD, 2500, gen(16))
    out = mode_metrics(samples, grid25_centers(), GRID25_STD)
    assert out["modes"] == out["num_modes"] == 25
    # ||x - c||^2 / std^2 is chi-square with 2 dof: P(<= 9) = 1 - exp(-4.5) = 0.98889 (sd 0.0021).
    assert out["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.0084)
    assert out["reverse_kl"] < 0.03  # sampling noise only, about (M - 1) / 2N = 0.005


def test_exact_ring8_samples_capture_every_mode():
    samples = mixture_samples(ring8_centers(), RING8_STD, 2000, gen(17))
    out = mode_metrics(samples, ring8_centers(), RING8_STD)
    assert out["modes"] == 8
    assert out["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)


def test_grid25_with_half_the_modes_removed():
    centers = grid25_centers()
    kept = centers[::2]  # 13 of the 25 modes
    out = mode_metrics(mixture_samples(kept, GRID25_STD, 2500, gen(18)), centers, GRID25_STD)
    assert out["modes"] == 13
    assert out["reverse_kl"] == pytest.approx(math.log(25 / 13), abs=0.02)
    assert out["reverse_kl"] == pytest.approx(math.log(2), abs=0.05)


def test_mode_metrics_capture_threshold_collapse_and_empty():
    centers = grid25_centers()
    near = centers[0] + torch.tensor([[0.01, 0.0], [0.0, 0.01]])
    collapsed = mode_metrics(near, centers, GRID25_STD)
    assert collapsed["modes"] == 1 and collapsed["high_quality"] == 1.0
    assert collapsed["reverse_kl"] == pytest.approx(math.log(25), rel=1e-12)
    one_stray = torch.cat([near, centers[1:2]])  # a single high-quality sample on mode 1
    assert mode_metrics(one_stray, centers, GRID25_STD)["modes"] == 2
    assert mode_metrics(one_stray, centers, GRID25_STD, min_count=2)["modes"] == 1
    # A sample just beyond 3 std of every centre is low quality and captures nothing.
    off = centers[:1] + torch.tensor([[3.01 * GRID25_STD, 0.0]])
    empty = mode_metrics(off, centers, GRID25_STD)
    assert empty["modes"] == 0 and empty["high_quality"] == 0.0 and math.isnan(empty["reverse_kl"])


# ---- Memorisation --------------------------------------------------------------------------------

def test_nearest_neighbours_match_brute_force():
    g = gen(19)
    samples, train = torch.randn(23, 5, generator=g), torch.randn(31, 5, generator=g)
    dist, index = nearest_neighbours(samples, train, chunk=7)
    full = torch.tensor([[math.dist(s, t) for t in train.double().tolist()]
                         for s in samples.double().tolist()], dtype=torch.float64)
    ref_dist, ref_index = full.min(1)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-12, atol=1e-12)
    assert torch.equal(index, ref_index)


def test_memorization_ratio_separates_copies_from_fresh_samples():
    g = gen(20)
    train = torch.randn(1000, 8, generator=g)
    test = torch.randn(300, 8, generator=g)
    copies = memorization_ratio(train[:300], train, test)
    assert copies["nn_ratio"] == 0.0 and copies["closer_than_test_median"] == 1.0
    fresh = memorization_ratio(torch.randn(300, 8, generator=g), train, test)
    assert fresh["nn_ratio"] == pytest.approx(1.0, abs=0.1)
    assert fresh["closer_than_test_median"] == pytest.approx(0.5, abs=0.12)


def test_memorization_accepts_images():
    g = gen(21)
    train, test = torch.rand(50, 1, 4, 4, generator=g), torch.rand(20, 1, 4, 4, generator=g)
    dist, index = nearest_neighbours(train[:5], train)
    assert torch.equal(index, torch.arange(5)) and dist.abs().max() < 1e-6
    assert memorization_ratio(test, train, test)["nn_ratio"] == pytest.approx(1.0)


# ---- Classes -------------------------------------------------------------------------------------

def test_class_coverage_counts_classes_above_a_tenth_of_their_fair_share():
    labels = torch.arange(7).repeat(100)  # 700 samples over classes 0..6 of 10
    out = class_coverage(labels, 10)
    assert out["classes_covered"] == 7 and out["num_classes"] == 10
    assert out["class_kl"] == pytest.approx(math.log(10 / 7), rel=1e-12)
    # 715 samples: fair share 71.5, bar 7.15; class 7 with 8 samples counts, class 8 with 7 not.
    noisy = torch.cat([labels, torch.full((8,), 7), torch.full((7,), 8)])
    assert class_coverage(noisy, 10)["classes_covered"] == 8
    probs = torch.nn.functional.one_hot(torch.arange(10).repeat(10), 10).float() * 5
    uniform = class_coverage(probs, 10)
    assert uniform["classes_covered"] == 10 and uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)


def test_conditional_accuracy():
    target = torch.tensor([0, 1, 2, 3])
    assert conditional_accuracy(torch.tensor([0, 1, 0, 3]), target) == 0.75
    assert conditional_accuracy(torch.eye(4)[[0, 1, 2, 0]], target) == 0.75


# ---- Likelihood ----------------------------------------------------------------------------------

def test_uniform_model_over_8bit_pixels_is_8_bits_per_dim():
    d = 3 * 32 * 32
    assert bits_per_dim(d * math.log(256), d) == 8.0
    per_example = torch.full((16,), d * math.log(256), dtype=torch.float64)
    assert bits_per_dim(per_example, d) == pytest.approx(8.0, abs=1e-12)
    assert nats_from_bpd(8.0, d) == pytest.approx(d * math.log(256), rel=1e-15)


def test_logmeanexp_is_stable_and_correct():
    x = torch.randn(4, 6, generator=gen(22), dtype=torch.float64)
    torch.testing.assert_close(logmeanexp(x, 1), x.exp().mean(1).log())
    assert float(logmeanexp(x)) == pytest.approx(float(x.exp().mean().log()), rel=1e-12)
    big = torch.tensor([1000.0, 1000.0], dtype=torch.float64)
    assert float(logmeanexp(big)) == pytest.approx(1000.0)


# ---- Devices -------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_agree_on_cuda():
    g = gen(23)
    x, y = torch.randn(300, 6, generator=g), torch.randn(300, 6, generator=g) + 0.2
    xc, yc = x.cuda(), y.cuda()
    assert fid_from_features(xc, yc) == pytest.approx(fid_from_features(x, y), rel=1e-9)
    kw = {"subsets": 5, "subset_size": 100}
    assert kid(xc, yc, **kw) == pytest.approx(kid(x, y, **kw), rel=1e-9)
    assert prdc(xc, yc) == pytest.approx(prdc(x, y))
    probs = torch.softmax(x, 1)
    assert inception_score(probs.cuda()) == pytest.approx(inception_score(probs))
    samples = mixture_samples(grid25_centers(), GRID25_STD, 500, g)
    assert mode_metrics(samples.cuda(), grid25_centers(), GRID25_STD) == pytest.approx(
        mode_metrics(samples, grid25_centers(), GRID25_STD))
    assert memorization_ratio(xc, yc, yc[:50]) == pytest.approx(memorization_ratio(x, y, y[:50]))


def test_fid_falls_back_to_eigendecompositions_when_sqrtm_fails(monkeypatch):
    """tr((S1 S2)^1/2) by symmetric eigendecompositions matches scipy's sqrtm, and FID uses it where
    sqrtm raises (scipy's 'Internal error in scipy.linalg.sqrtm: -102', met on an early Glow's samples)."""
    import numpy as np
    from scipy.linalg import sqrtm

    from genlab.metrics import frechet

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) * 2 + 1
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expect = np.trace(sqrtm(s1 @ s2)).real
    assert abs(frechet.trace_sqrt_product(s1, s2) - expect) < 1e-8
    mu1, mu2 = a.mean(0), b.mean(0)
    normal = frechet.fid_from_stats(mu1, s1, mu2, s2)

    def broken(m):
        raise np.linalg.LinAlgError("Internal error in scipy.linalg.sqrtm: -102")

    monkeypatch.setattr(frechet, "_sqrtm", broken)
    assert abs(frechet.fid_from_stats(mu1, s1, mu2, s2) - normal) < 1e-8
    with pytest.raises(ValueError, match="not finite"):
        frechet.fid_from_stats(mu1 * np.nan, s1, mu2, s2)


def test_non_finite_samples_are_scored_with_a_warning(caplog):
    from genlab.metrics.evaluator import finite_samples

    x = torch.zeros(5, 1, 2, 2)
    x[1, 0, 0, 0], x[3, 0, 1, 1], x[3, 0, 0, 1] = float("nan"), float("inf"), -float("inf")
    with caplog.at_level("WARNING", logger="genlab"):
        y = finite_samples(x, "glow")
    assert torch.isfinite(y).all() and y[3, 0, 1, 1] == 1 and y[3, 0, 0, 1] == -1 and y[1, 0, 0, 0] == 0
    assert "glow drew 2 of 5 samples with NaN or inf values" in caplog.text
    ok = torch.ones(3, 2)
    assert finite_samples(ok, "gan") is ok
