"""A Gaussian mixture fitted by EM: the ex-post latent sampler of an auto-encoder (Ghosh et al. 2020;
pythae's GaussianMixtureSampler). Fitted to the training codes after training, it puts samples where
the codes are, not in the "holes" of the prior the encoder never filled."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture:
    """weights (K,), means (K, D), full covariances (K, D, D), in float64."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log(w_k N(x; mu_k, Sigma_k)) as (N, K)."""
        x = x.double()
        chol = torch.linalg.cholesky(self.covariances)
        diff = (x.unsqueeze(1) - self.means).unsqueeze(-1)  # (N, K, D, 1)
        sol = torch.linalg.solve_triangular(chol.unsqueeze(0), diff, upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = x.shape[1]
        return torch.log(self.weights) - 0.5 * (sol.pow(2).sum(-1) + log_det + d * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per row."""
        return torch.logsumexp(self.component_log_probs(x), 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float64): a component by weight, then its Gaussian."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)
        return self.means[k] + (chol[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def state(self) -> dict[str, torch.Tensor]:
        """Its tensors, for torch.save (read back with weights_only=True)."""
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


def fit_gmm(x: torch.Tensor, k: int, iters: int = 200, tol: float = 1e-7, reg: float = 1e-6,
            generator: torch.Generator | None = None) -> GaussianMixture:
    """EM for a k-component, full-covariance mixture of the rows of x (N, D), in float64.

    Initialised by k-means++ seeding (then one hard assignment); reg * I keeps each covariance
    positive definite; stops when the mean log-likelihood improves by less than tol.
    """
    x = x.double().cpu()
    n, d = x.shape
    if n < k:
        raise ValueError(f"a {k}-component mixture needs at least {k} points, got {n}")
    centres = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        centres.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
    assign = torch.cdist(x, torch.stack(centres)).argmin(1)
    resp = torch.nn.functional.one_hot(assign, k).double()
    eye = torch.eye(d, dtype=torch.float64)
    last = -math.inf
    gmm = None
    for _ in range(iters):
        # M step
        nk = resp.sum(0) + 1e-10
        means = (resp.T @ x) / nk.unsqueeze(1)
        diff = x.unsqueeze(1) - means  # (N, K, D)
        cov = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk.view(-1, 1, 1) + reg * eye
        gmm = GaussianMixture(nk / n, means, cov)
        # E step
        logp = gmm.component_log_probs(x)
        ll = float(torch.logsumexp(logp, 1).mean())
        resp = torch.softmax(logp, 1)
        if ll - last < tol:
            break
        last = ll
    return gmm
