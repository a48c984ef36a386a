"""The likelihood template: a model implements `log_prob` (or its bound) and sampling; the NLL in
nats, bits/dim, the training step, the held-out evaluation and its protocol are written here once.

Hooks a subclass may override: `log_prob(x[, y])` (nats per example of what the model scores),
`nll_offset()` (nats from that to the NLL of the stored data, e.g. the dequantisation bound),
`eval_terms(batch)` (per-example nats to average on the test split), `eval_batch_size()` and
`protocol(data, n)` (how the numbers were measured).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from genlab import progress
from genlab.metrics.likelihood import nats_to_bits_per_dim
from genlab.models.base import Batch, Model, Step, StepContext

#: eval term -> (its key in nats, its key in bits/dim or None); "nll"-like terms get nll_offset()
REPORTS = {
    "nll": ("test_nll_nats", "test_bits_per_dim"),
    "neg_elbo": ("test_neg_elbo_nats", "test_elbo_bits_per_dim"),
    "kl": ("test_kl_nats", None),
}
OFFSET_TERMS = ("nll", "neg_elbo")
#: evaluation draws its noise (dequantisation, posterior samples) from this seed, so two evaluations
#: of one model agree and the evaluations of one run differ by the model only
EVAL_SEED = 0


class LikelihoodModel(Model):
    """A model with a (bound on its) log-likelihood: trained by maximum likelihood, evaluated on test NLL."""

    family = "likelihood"
    #: the optimizer key and step name of the one training step
    key: str = "model"
    #: importance samples asked of evaluate() (None = the model's own eval_k); read by estimating models
    eval_k_override: int | None = None

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.num_dims = math.prod(spec.shape)

    # ---- hooks --------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log-likelihood (or its bound) per example in nats of the model's own input."""
        raise NotImplementedError

    def nll_offset(self) -> float:
        """Nats to add to -log_prob for the NLL of the data as stored (0 when log_prob is already that)."""
        return 0.0

    def reports_bits(self) -> bool:
        """Whether training logs (and minimises) bits/dim rather than nats: for images."""
        return self.spec.kind == "image"

    def eval_batch_size(self) -> int:
        """Test examples per forward pass during evaluate()."""
        return 500

    def eval_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-example quantities in nats (keys of REPORTS) on one test batch."""
        return {"nll": -self._log_prob(batch).double()}

    def eval_k(self) -> int | None:
        """Importance samples per test example of an estimated NLL (None: the NLL is exact, e.g. flows)."""
        return None

    def protocol(self, data, n: int) -> dict:
        """How the numbers were measured: the data's binarisation and how many test examples."""
        return {"binarize": getattr(data, "binarize", None) or "none", "eval_images": n}

    # ---- written once -------------------------------------------------------------------------
    def _log_prob(self, batch: Batch) -> torch.Tensor:
        return self.log_prob(batch.x, batch.y) if self.conditional else self.log_prob(batch.x)

    def bits_per_dim(self, nll_nats):
        """Bits per dimension of an NLL in nats per example."""
        return nats_to_bits_per_dim(nll_nats, self.num_dims)

    def schedule(self):
        return [Step(self.key, self.key, self.train_step)]

    def train_step(self, batch: Batch, ctx: StepContext):
        """Minimise the NLL of the batch: in bits/dim for images, in nats otherwise."""
        nll = self.nll_offset() - self._log_prob(batch).float().mean()
        if not self.reports_bits():
            return nll, {"nll_nats": nll.detach()}
        bpd = self.bits_per_dim(nll)
        return bpd, {"nll_nats": nll.detach(), "bits_per_dim": bpd.detach()}

    @torch.no_grad()
    def evaluate(self, data, *, limit=None, k=None, on_batch=None):
        """Mean test nats of every eval term, bits/dim of the NLL-like ones, and the protocol.

        limit: test examples (None = model.eval_limit); k: importance samples of an estimated NLL
        (None = the model's eval_k), e.g. the trainer's bounds on its periodic evaluation; on_batch:
        called with the number of test examples done after each batch.
        """
        parts: dict[str, list[torch.Tensor]] = defaultdict(list)
        n = 0
        dev = next(self.parameters()).device
        limit = limit or self.cfg.eval_limit
        total = min(limit, len(data.raw("test"))) if limit else len(data.raw("test"))
        self.eval_k_override = k
        try:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
                    progress.bar(total, "test NLL", "img") as bar:
                torch.manual_seed(EVAL_SEED)
                for b in data.batches("test", self.eval_batch_size(), limit=limit):
                    for name, v in self.eval_terms(b).items():
                        parts[name].append(v)
                    n += len(b)
                    bar.update(len(b))
                    if on_batch is not None:
                        on_batch(n)
            return {**self.report({k: torch.cat(v) for k, v in parts.items()}), **self.protocol(data, n)}
        finally:
            self.eval_k_override = None

    def report(self, terms: dict[str, torch.Tensor]) -> dict:
        """The reported numbers from the per-example terms of the whole test split."""
        out = {}
        for name, (nats_key, bits_key) in REPORTS.items():
            if name not in terms:
                continue
            nats = float(terms[name].double().sum()) / len(terms[name])
            if name in OFFSET_TERMS:
                nats = nats + self.nll_offset()
            out[nats_key] = nats
            if bits_key:
                out[bits_key] = self.bits_per_dim(nats)
        return out
