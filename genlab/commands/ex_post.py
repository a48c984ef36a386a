"""Ex-post latent samplers for `genlab sample prior=gmm`: a Gaussian mixture fitted to an auto-encoder's
codes of its training images, cached in the run folder (priors/), then decoded.

Ghosh et al. (2020) and pythae fit such a density after training: the VAE's aggregate posterior does
not fill N(0, I) (the "prior hole"), so decoding prior samples lands where no training code lies.
"""

from __future__ import annotations

import logging

import torch

from genlab.errors import GenlabError

log = logging.getLogger("genlab")
PRIORS = ("standard", "gmm")


def check_prior(prior, components) -> None:
    """prior= and prior_components= are known values (before the run is loaded)."""
    if prior not in (None, *PRIORS):
        raise GenlabError(f"prior={prior} is unknown; choose standard (the model's own) or gmm")
    if not isinstance(components, int) or isinstance(components, bool) or components < 1:
        raise GenlabError(f"prior_components must be a whole number >= 1, got {components!r}")


@torch.no_grad()
def training_codes(run, batch_size: int = 500, limit: int | None = None) -> torch.Tensor:
    """The model's codes of the run's training images (all, or the first `limit`)."""
    from genlab.commands.eval import run_data

    data, _ = run_data(run)
    x = data.train_x if limit is None else data.train_x[:limit]
    dev = next(run.model.parameters()).device
    return torch.cat([run.model.codes(x[i:i + batch_size].to(dev)).double().cpu()
                      for i in range(0, len(x), batch_size)])


def fitted_gmm(run, components: int, seed: int = 0, limit: int | None = None):
    """The mixture fitted to the run's training codes, read from <run>/priors/ when cached there."""
    from genlab.commands.common import run_folder
    from genlab.models.gmm import GaussianMixture, fit_gmm

    if not run.model.encodes:
        raise GenlabError(f"prior=gmm fits a mixture to an auto-encoder's latent codes; model={run.cfg.model.name} "
                          "has no encoder (use it with vae, beta_vae, iwae, vampprior, wae or aae)")
    name = f"gmm_k{components}_step{run.info['step']}_seed{seed}" + (f"_n{limit}" if limit else "") + ".pt"
    path = run_folder(run.path) / "priors" / name
    if path.is_file():
        return GaussianMixture(**torch.load(path, weights_only=True)), path
    codes = training_codes(run, limit=limit)
    try:
        gmm = fit_gmm(codes, components, generator=torch.Generator().manual_seed(int(seed)))
    except ValueError as e:
        raise GenlabError(f"prior=gmm: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(gmm.state(), tmp)
    tmp.replace(path)
    log.info("fitted a %d-component mixture to %d training codes: %s", components, len(codes), path)
    return gmm, path


@torch.no_grad()
def gmm_samples(run, n: int, components: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    """n decoded samples of latents drawn from the fitted mixture, reproducible for a seed."""
    gmm, _ = fitted_gmm(run, components, seed)
    z = gmm.sample(n, generator=torch.Generator().manual_seed(int(seed))).float()
    return torch.cat([run.model.decode(z[i:i + batch_size]).float().cpu() for i in range(0, n, batch_size)])
