"""One run on many processes: torchrun's process group, DDP around each step, agreement between ranks.

`torchrun --nproc_per_node=N -m genlab train ...` starts N copies of the same run. Each joins the
process group from torchrun's environment (NCCL on CUDA, gloo on CPU) and takes the GPU of its local
rank. Every rank computes; rank 0 alone writes (TensorBoard, images, checkpoints, eval, progress bar).

Why DDP wraps the step, not the network: models call their networks from inside step functions,
often through methods other than forward (flow.log_prob, pixelcnn.log_prob) or are themselves the
network (the VAE's networks() is {"vae": self}). DDP only synchronises gradients of a backward that
follows its own forward, so each optimizer key gets one DDP whose module holds that key's network and
whose forward *is* the step function. One forward and one backward per step then cover every way a
model uses its networks: the gradient penalty's autograd.grad(create_graph=True) runs inside the
forward and its double backward reaches the parameters once; the other player's parameters are not in
this DDP at all, so the trainer's requires_grad toggling needs neither no_sync nor unused-parameter
search; weight clipping and EMA act on identical, already averaged weights. Models keep their own
module tree, so checkpoints have the same keys with and without DDP.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import sys
import time

import torch
import torch.distributed as tdist
from torch import nn

from genlab.engine import signals
from genlab.errors import GenlabError

log = logging.getLogger("genlab")

# Offsets per-rank seeds far from the seeds users pick for neighbouring runs.
_RANK_SEED_STRIDE = 1_000_003
NEVER = 2**62  # the first non-finite step while every loss was finite


class AgreedError(GenlabError):
    """A user error that every rank meets at the same step (divergence): rank 0 says it once."""


def launched() -> bool:
    """Whether torchrun (or srun with torchrun's variables) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun), readable before any group exists."""
    return int(os.environ.get("RANK", "0"))


class Dist:
    """This process's place in the job; a plain process is rank 0 of a world of 1 and every call is local."""

    def __init__(self, device: torch.device, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.device = torch.device(device)
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._signal: int | None = None
        self.training = False  # from the first step on, an error may be this rank's alone

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- agreement between ranks --------------------------------------------------------------
    def mean(self, scalars: dict[str, float]) -> dict[str, float]:
        """The average of each scalar over ranks (every rank logs the same keys)."""
        if not self.enabled or not scalars:
            return scalars
        keys = sorted(scalars)
        t = torch.tensor([float(scalars[k]) for k in keys], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t)
        mean = dict(zip(keys, (t / self.world).tolist()))
        return {k: mean[k] for k in scalars}

    def broadcast(self, obj):
        """Rank 0's object on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's object, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def seed_rank(self, seed: int) -> None:
        """Give ranks > 0 their own noise (latents, dropout, binarisation); rank 0 keeps the single-process stream."""
        if self.rank > 0:
            import random

            import numpy as np

            s = seed + _RANK_SEED_STRIDE * self.rank
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)

    # ---- stopping together ----------------------------------------------------------------------
    def catch_signals(self) -> None:
        """SIGTERM/SIGINT only mark a stop; the ranks agree on it at the next step boundary.

        Signals come in pairs here (Ctrl-C or SLURM reach torchrun and every worker, then torchrun
        forwards its own), so a second one is not a reason to stop harder: torchrun kills a rank
        that does not exit within its grace period.
        """
        def mark(signum, frame):
            self._signal = self._signal or signum
            signals.raise_if_at_once(signum)  # the final evaluation stops at once (rank 0 runs it alone)

        for s in signals.EXIT_CODES:  # SIGTERM, SIGINT and SIGUSR1 (SLURM's warning)
            if s not in signals.CHAINED_ONLY:  # SIGUSR2 stays with whoever installed it (submitit)
                signal.signal(s, mark)

    @property
    def signal(self) -> int | None:
        """The stop signal this rank received, or None."""
        return self._signal or signals.requested_signal()

    def agree(self, bad_step: torch.Tensor | None, read: bool = True) -> tuple[int | None, tuple[int, int] | None]:
        """(stop signal, (first non-finite step, the rank it was on)) over every rank, in one all-reduce.

        Under torchrun every rank learns at the same step that one was signalled or diverged, so all
        stop together. Alone, the on-device flag `bad_step` (NEVER while finite) is read, which syncs
        the device, only when `read` is set; the signal is a Python flag and costs nothing."""
        mine = self.signal or 0
        if not self.enabled:
            bad = int(bad_step) if read and bad_step is not None else NEVER
            return mine or None, (None if bad == NEVER else (bad, 0))
        never = torch.full((), NEVER, dtype=torch.int64, device=self.device)
        # One code orders by step, then rank: the smallest is the first divergence (NEVER * world overflows).
        code = never if bad_step is None else torch.where(bad_step == NEVER, never, bad_step * self.world + self.rank)
        t = torch.stack([torch.tensor(mine, dtype=torch.int64, device=self.device), -code])
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        sig, first = t[0].item(), -t[1].item()
        return sig or None, (None if first == NEVER else divmod(first, self.world))

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()


def init(device_name: str) -> Dist:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); outside torchrun, a world of one."""
    from genlab.device import resolve_device

    if not launched():
        return Dist(resolve_device(device_name))
    rank, world, local = env_rank(), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    name = str(device_name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise GenlabError("trainer.device=cuda under torchrun but CUDA is not available; use trainer.device=cpu")
        if local >= n:
            raise GenlabError(f"local rank {local} has no GPU: this machine has {n}; use --nproc_per_node={n} or fewer")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    elif name == "cpu":
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise GenlabError(f"trainer.device={name} cannot be shared out under torchrun; use trainer.device=cuda "
                          "(each rank takes the GPU of its local rank), cpu or auto")
    # Rank 0 alone evaluates while the others wait in their next collective: allow a long evaluation.
    tdist.init_process_group(backend, timeout=datetime.timedelta(minutes=60),
                             device_id=device if device.type == "cuda" else None)
    d = Dist(device, rank, world, local)
    d.catch_signals()
    return d


def own_state(state: dict, dist: Dist) -> dict:
    """This rank's RNG and sampler state from a checkpoint (rank 0's is the top-level one)."""
    ranks = state.get("ranks")
    if ranks and len(ranks) == dist.world:
        return ranks[dist.rank]
    if dist.rank == 0:
        if ranks:
            log.warning("resuming a %d-process run on %d: the global batch changes and ranks > 0 draw new noise",
                        len(ranks), dist.world)
        return {"rng": state["rng"], "data": state["data"]}
    from genlab.engine import checkpoint as ckpt

    # Another world size: the shared sampler continues where it was; this rank keeps its own fresh noise.
    return {"rng": ckpt.rng_state(), "data": state["data"]}


class NullWriter:
    """What ranks > 0 hold instead of a SummaryWriter: they write nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


# ---- the networks ---------------------------------------------------------------------------------
class _StepModule(nn.Module):
    """Holds the network one optimizer updates, so DDP sees its parameters; forward runs a step function."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, fn, batch, ctx):
        return fn(batch, ctx)


class StepRunner:
    """Runs a model's step function for an optimizer key: through that key's DDP when there are several ranks."""

    def __init__(self, model, dist: Dist, channels_last: bool = False):
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.channels_last = channels_last
        self.ddp: dict[str, nn.Module] = {}
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            # Built while every parameter still requires grad: DDP leaves out frozen parameters for good.
            self.ddp = {k: DDP(_StepModule(m), device_ids=ids,
                               find_unused_parameters=bool(getattr(model, "ddp_find_unused", False)))
                        for k, m in model.networks().items()}

    def __call__(self, key: str, fn, batch, ctx):
        if self.channels_last and batch.x is not None and batch.x.dim() == 4:
            batch.x = batch.x.contiguous(memory_format=torch.channels_last)
        if key in self.ddp:
            return self.ddp[key](fn, batch, ctx)
        return fn(batch, ctx)


def prepare_model(model, dist: Dist, tcfg) -> None:
    """Sync batch norm, channels_last and torch.compile on the model's networks, as trainer.* asks."""
    if tcfg.sync_batchnorm:
        if dist.device.type != "cuda":
            raise GenlabError("trainer.sync_batchnorm=true needs CUDA devices (SyncBatchNorm has no CPU kernel); "
                              "leave it false on CPU")
        if dist.enabled:
            for k, net in model.networks().items():
                converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
                if converted is not net:  # the network is a bare batch norm layer
                    raise GenlabError(f"network {k} is a single batch-norm layer; trainer.sync_batchnorm cannot wrap it")
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if tcfg.compile:
        targets = model.compile_targets()
        skipped = sorted(k for k, m in model.networks().items() if m is not model and k not in targets)
        for m in targets.values():
            m.compile()
        log.info("torch.compile: %s%s", ", ".join(targets) or "nothing",
                 f" (not {', '.join(skipped)}: the model opts out)" if skipped else "")


# What a collective raises when a peer process died (gloo says so in a RuntimeError).
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def _lost_peer(e: BaseException) -> bool:
    return isinstance(e, tdist.DistError) or (isinstance(e, RuntimeError) and any(m in str(e) for m in _LOST_PEER))


@contextlib.contextmanager
def quiet_failures(dist: Dist):
    """Errors under torchrun are said once: a user error by rank 0 (or by the one rank that met it while
    training), a crash by the rank that crashed.

    When a peer dies, the others fail in their next collective and torchrun stops them with SIGTERM;
    they leave quietly then, so the failing rank's error is the job's one error.
    """
    try:
        yield
    except GenlabError as e:
        if dist.is_main:
            raise
        if dist.training and not isinstance(e, AgreedError):  # this rank's own (rank 0 may be fine)
            print(f"genlab: error: rank {dist.rank}: {e}", file=sys.stderr)
        sys.exit(2)  # before training, every rank meets the same user error; rank 0 says it once
    except Exception as e:  # noqa: BLE001 - only a lost peer is handled here
        if not (dist.enabled and _lost_peer(e)):
            raise
        for _ in range(50):  # torchrun's SIGTERM to the survivors usually follows within a second
            if dist._signal is not None:
                sys.exit(signals.EXIT_CODES.get(dist._signal, 1))
            time.sleep(0.1)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"genlab: error: rank {dist.rank} lost contact with the other ranks: {first[:200]}", file=sys.stderr)
        sys.exit(1)
