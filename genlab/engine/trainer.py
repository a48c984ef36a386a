"""The one training loop: it runs any Model's schedule of steps and knows nothing about the objective.

One trainer step = one pass over model.schedule() (for GANs: one generator update), so
trainer.max_steps counts what papers count. Everything else here is bookkeeping: optimizers,
precision, logging, image grids, checkpoints, evaluation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genlab import __version__
from genlab.engine.budget import eval_bound
from genlab.device import resolve_device
from genlab.engine import checkpoint as ckpt
from genlab.engine import distributed, signals, tb_layout, writers
from genlab.engine.budget import parse_duration
from genlab.engine.memory import keep_freed_memory
from genlab.engine.precision import Precision
from genlab.engine.scalars import FirstNonFinite, WindowMeans
from genlab.errors import GenlabError
from genlab.seeds import derive
from genlab.types import Batch

log = logging.getLogger("genlab")


_NEVER = distributed.NEVER  # the non-finite flag's value while every loss was finite


def build_optimizer(opt_cfg, params, network: str, ratio: float = 1.0) -> torch.optim.Optimizer:
    """An optimizer from optimizer._target_ and the keyword arguments that are set (not null).

    ratio: the model's Model.optimizer_ratio for this network: lr * ratio and betas ** ratio."""
    from hydra.utils import get_class

    kw = {k: v for k, v in OmegaConf.to_container(opt_cfg, resolve=True).items()
          if k not in ("name", "_target_", "per_network", "paper") and v is not None}
    paper = (opt_cfg.get("paper") or {}).get(opt_cfg.get("name")) or {}
    kw.update((paper.get("per_network") or {}).get(network) or {})
    kw.update((opt_cfg.per_network or {}).get(network) or {})
    if "betas" in kw:
        kw["betas"] = tuple(float(b) ** ratio for b in kw["betas"])
    if ratio != 1.0 and "lr" in kw:
        kw["lr"] = kw["lr"] * ratio
    try:
        cls = get_class(opt_cfg._target_)
    except Exception as e:  # noqa: BLE001 - any import failure is a config error here
        raise GenlabError(f"optimizer._target_={opt_cfg._target_} cannot be imported ({e})") from None
    try:
        return cls(params, **kw)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m is None:
            raise GenlabError(f"optimizer {opt_cfg._target_} rejects its settings: {e}") from None
        raise GenlabError(f"optimizer.{m.group(1)} is not an argument of {opt_cfg._target_}; drop it "
                          f"(optimizer.{m.group(1)}=null) or pick an optimizer that takes it") from None
    except ValueError as e:
        raise GenlabError(f"optimizer {opt_cfg._target_} rejects its settings: {e}") from None


@contextmanager
def _side_effect_free(model: torch.nn.Module, device: torch.device, steps_bound: int | None = None):
    """Eval mode and a forked RNG, so logging and evaluation never change the training trajectory;
    samplers that take steps take at most steps_bound (trainer.sample_steps) meanwhile."""
    was_training, bound = model.training, model.steps_bound
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.eval()
        model.steps_bound = steps_bound
        try:
            yield
        finally:
            model.train(was_training)
            model.steps_bound = bound


class Trainer:
    """Fits a Model to Data under a trainer config, writing everything into run_dir."""

    def __init__(self, cfg, run_dir: Path, evaluator=None, dist: distributed.Dist | None = None):
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.run_dir = Path(run_dir)
        self.dist = dist or distributed.Dist(resolve_device(self.tcfg.device))
        self.device = self.dist.device
        self.precision = Precision(str(self.tcfg.precision), self.device)
        self.step = 0
        self.evaluator = evaluator
        self.writer = None
        self.meta: dict = {}
        self.on_checkpoint = None  # called after each last.pt, e.g. to refresh the run's status record
        self._saved_step: int | None = None  # the step last.pt holds
        self.best: dict | None = None  # {"metric", "value", "step"} of checkpoints/best.pt
        self.eval_seconds = 0.0  # periodic evaluation's share of the run (perf/eval_seconds per evaluation)
        self._nonfinite: FirstNonFinite | None = None  # on-device: the first step whose loss was not finite
        self.stopped_by: int | None = None  # the signal that ended training early
        self.stopped_during: str | None = None  # what it interrupted after the last checkpoint, if anything
        self.max_seconds = parse_duration(self.tcfg.max_time)
        # The budget's clock: wall seconds, or this process's CPU seconds (a fair budget on a shared machine).
        self.clock = time.process_time if self.tcfg.max_time_clock == "cpu" else time.perf_counter
        # Evaluation and last.pt by training time as well as by steps: models that differ 100x in steps
        # per second get curves with points at the same training times (genlab zoo) and lose at most
        # that much training when interrupted.
        self.every_time = {"eval": parse_duration(self.tcfg.eval_every_time, "trainer.eval_every_time"),
                           "checkpoint": parse_duration(self.tcfg.checkpoint_every_time,
                                                        "trainer.checkpoint_every_time")}
        self._next_time: dict[str, float] = {}
        self.elapsed = 0.0  # wall seconds of earlier segments of this run (restored on resume)
        self.started: float | None = None
        self.stopped_by_time = False
        self.last_eval: dict | None = None  # {"step": ..., **metrics} of the latest evaluation

    # ---- setup --------------------------------------------------------------------------------
    def setup(self, model, data) -> None:
        self.model = model.to(self.device)
        self.data = data
        distributed.prepare_model(model, self.dist, self.tcfg)
        data.shard(self.dist.rank, self.dist.world)
        self.schedule = model.schedule()
        nets = model.networks()
        self.params = {k: [p for p in m.parameters() if p.requires_grad] for k, m in nets.items()}
        self._trainable: str | None = None  # the optimizer key whose parameters require grad now
        missing = {s.optimizer for s in self.schedule} - set(nets)
        if missing:
            raise RuntimeError(f"schedule uses optimizer keys {missing} that networks() does not provide")
        self.optimizers = {k: build_optimizer(self.cfg.optimizer, ps, k, model.optimizer_ratio(k))
                           for k, ps in self.params.items()}
        self.run_step = distributed.StepRunner(model, self.dist, channels_last=bool(self.tcfg.channels_last))
        self.dist.training = True
        self.dist.seed_rank(int(self.cfg.seed))
        g = torch.Generator().manual_seed(derive(self.cfg.seed, "fixed-noise"))
        n = int(self.tcfg.num_fixed_samples)
        if data.kind == "points":  # a scatter plot needs many points to show which modes are covered
            n = max(n, 2000)
        z = model.latent(n, generator=g)
        self.fixed = {"n": n, "noise": z.to(self.device) if z is not None else None, "seed": derive(self.cfg.seed, "visuals")}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scalers": self.precision.state_dict(),
            "step": self.step,
            "data": self.data.state_dict(),
            "rng": ckpt.rng_state(),
            **ckpt.describe_run(self.cfg, self.data),
            "genlab_version": __version__,
            "best": self.best,
            "elapsed": self.train_time(),
            **self.meta,
        }

    def _rank_states(self) -> list[dict]:
        # A collective: every rank calls it at the same step, so each rank's RNG and sampler resume exactly.
        return self.dist.gather({"rng": ckpt.rng_state(), "data": self.data.state_dict()})

    def load_state_dict(self, state: dict, path) -> None:
        ckpt.load_model_state(self.model, state["model"], path)
        try:
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            self.precision.load_state_dict(state.get("scalers", {}))
            mine = distributed.own_state(state, self.dist)
            self.data.load_state_dict(mine["data"])
            self.step = int(state["step"])
            self.best = state.get("best")
            self.elapsed = float(state.get("elapsed", 0.0))
            ckpt.set_rng_state(mine["rng"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise GenlabError(f"checkpoint {path} does not match this run's optimizers/data ({e}); "
                              "resume with the same model, optimizer and dataset settings") from None

    def save(self, name: str = "last") -> Path:
        self._check_diverged()  # a save syncs anyway; never overwrite a finite checkpoint with nan weights
        path = self.run_dir / "checkpoints" / f"{name}.pt"
        ranks = self._rank_states()
        if self.dist.is_main:
            ckpt.save({**self.state_dict(), **({"ranks": ranks} if self.dist.enabled else {})}, path)
        if name == "last":
            self._saved_step = self.step
            if self.on_checkpoint is not None:
                self.on_checkpoint()
        return path

    def train_time(self) -> float:
        """Seconds this run has trained (periodic evaluation excluded), earlier segments included."""
        return self.elapsed + (self.clock() - self.started if self.started is not None else 0.0)

    def out_of_time(self, bar=None) -> bool:
        """Whether trainer.max_time is spent: rank 0's clock decides for every rank under torchrun. `bar`, the
        training bar of a time budget, is moved to the same reading of the clock."""
        if self.max_seconds is None:
            return False
        now = self.train_time()
        if bar is not None and int(now) > bar.n:
            bar.update(min(int(now), bar.total) - bar.n)
        return bool(self.dist.broadcast(now >= self.max_seconds))

    def due_by_time(self) -> set[str]:
        """Which of eval / checkpoint trainer.*_every_time makes due now: rank 0's clock decides for every rank."""
        if not self._next_time:
            return set()
        now = self.train_time()
        due = {k for k, at in self._next_time.items() if now >= at}
        for k in due:
            self._next_time[k] = (now // self.every_time[k] + 1) * self.every_time[k]
        return set(self.dist.broadcast(sorted(due)))

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self, model, data, resume: dict | None = None, resume_path=None) -> dict:
        """Train until trainer.max_steps; returns the last logged scalars."""
        self.setup(model, data)
        keep_freed_memory()
        if resume is not None:
            self.load_state_dict(resume, resume_path)
            log.info("resumed from %s at step %d", resume_path, self.step)
        self.writer = writers.EventWriter(self.run_dir / "tb") if self.dist.is_main else distributed.NullWriter()
        self.layout = tb_layout.Layout(self.writer)
        if self.step == 0:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(self.cfg) + "\n```", 0)
        if self.dist.is_main:
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_tmp(self.run_dir / "checkpoints")
        # Watching losses for nan/inf costs no sync: a flag on the device, read when logging or saving.
        # fp16 skips non-finite steps by design; there the loss scale is watched instead.
        if self.precision.mode != "16":
            self._nonfinite = FirstNonFinite(_NEVER, self.device)
        # Under torchrun the ranks' own handlers (distributed.Dist.catch_signals) mark the stop.
        catch = contextlib.nullcontext() if self.dist.enabled else signals.stop_on_signals()
        try:
            with catch:
                return self._loop(self.tcfg)
        finally:
            self.writer.close()

    def _loop(self, t) -> dict:
        from tqdm import tqdm

        bar = self._progress_bar(t, tqdm)
        self._last: dict = {}
        try:
            self._steps(t, bar)
        finally:
            bar.close()  # before any error or stop message, so it is printed on a line of its own
        if self.step >= t.max_steps:
            self.stopped_by = None  # the request came with the last step: the run is complete
        self.elapsed, self.started = self.train_time(), None  # the budget clock stops with the loop
        if self._saved_step != self.step:  # the periodic checkpoint of this very step is already last.pt
            self.save()
        if self.stopped_by:
            return self._last
        with self.finishing():
            if t.sample_every and (self.step % t.sample_every != 0 or self.stopped_by_time):
                self.log_images()
            evaluated = self.last_eval is not None and self.last_eval["step"] == self.step
            if (t.eval_every and (self.step % t.eval_every != 0 or self.stopped_by_time)) or (
                    self.every_time["eval"] and not evaluated):
                self.run_eval()
        return self._last

    def _progress_bar(self, t, tqdm):
        """The training bar: steps out of max_steps, or under trainer.max_time the training seconds out of the
        budget (what ends such a run; its max_steps is usually a bound never reached), the step in its postfix."""
        off = not (t.progress and self.dist.is_main)
        if self.max_seconds is None:
            return tqdm(total=t.max_steps, initial=self.step, disable=off, dynamic_ncols=True, desc="train", unit="step")
        total = max(1, round(self.max_seconds))
        clock = "CPU s" if self.tcfg.max_time_clock == "cpu" else "s"
        return tqdm(total=total, initial=min(int(self.elapsed), total), disable=off, dynamic_ncols=True, desc="train",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} " + clock +
                    " of trainer.max_time [{elapsed}<{remaining}{postfix}]")

    @contextmanager
    def finishing(self, install: bool = False):
        """Work after the final last.pt (images, evaluation): a stop signal ends it at once, not at its end.

        install: put the stop handlers in place (after fit, which removes its own)."""
        catch = signals.stop_on_signals() if install and not self.dist.enabled else contextlib.nullcontext()
        try:
            with catch, signals.interruptible(self.dist.signal):
                yield
        except signals.Interrupted as e:
            self.stopped_by, self.stopped_during = e.signum, "the final evaluation"
            log.warning("rank %d: %s stopped the final images/evaluation; checkpoint %s is complete", self.dist.rank,
                        e, self.run_dir / "checkpoints" / "last.pt")

    def _steps(self, t, bar) -> None:
        """Trainer steps until max_steps or a stop request; the last logged scalars go to self._last.

        The hot path: the trainer config is read into locals once (an OmegaConf attribute costs
        microseconds), step functions compute their diagnostics only on logging steps (ctx.log), and
        the gradient norm is taken only there; what stays per update is the loss in the log window and
        the on-device non-finite flag.
        """
        window, nonfinite = WindowMeans(), self._nonfinite
        by_time = self.max_seconds is not None  # the bar counts training seconds, not steps
        tick, tick_step = time.perf_counter(), self.step
        self.started = self.clock()
        self._next_time = {k: (self.elapsed // v + 1) * v for k, v in self.every_time.items() if v}
        max_steps, log_every, batch_size, grad_clip = int(t.max_steps), int(t.log_every), int(t.batch_size), t.grad_clip
        sample_every, eval_every, checkpoint_every = int(t.sample_every), int(t.eval_every), int(t.checkpoint_every)
        if self.step == 0 and sample_every:
            self.log_images()
        while self.step < max_steps:
            log_now = bool(log_every) and (self.step + 1) % log_every == 0
            for s in self.schedule:
                if not s.due(self.step):
                    continue
                self._train_only(s.optimizer)
                optimizer, params = self.optimizers[s.optimizer], self.params[s.optimizer]
                for _ in range(s.repeat):
                    batch = self.data.next(batch_size) if s.needs_data else Batch.of_size(batch_size)
                    ctx = self.precision.context(self.step, s.optimizer, log=log_now)
                    with self.precision.autocast():
                        loss, logs = self.run_step(s.optimizer, s.fn, batch, ctx)
                    norm = self.precision.backward_and_step(loss, optimizer, s.optimizer, params, grad_clip,
                                                            need_norm=log_now)
                    if s.after is not None:
                        s.after(logs)
                    if nonfinite is not None:  # divergence is caught at the step it happens
                        nonfinite.add(self.step + 1, loss)
                    if log_every:
                        # Non-finite values are left out of the window's average (with fp16 they mark
                        # steps the GradScaler skipped); a window with no finite value at all is divergence.
                        logs = {"loss": loss, **logs}
                        if norm is not None:
                            logs["grad_norm"] = norm
                        window.add(s.name, logs)
            self.step += 1
            if not by_time:
                bar.update(1)
            if log_now:
                now = time.perf_counter()
                last = window.means()  # 0/0 = nan: never finite
                last["perf/steps_per_sec"] = (self.step - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, self.step
                last = self.dist.mean(last)
                self._last = last
                self._check_diverged()
                self._check_finite(last)
                self.log_scalars(last)
                postfix = {k.split("/")[0]: f"{v:.3g}" for k, v in last.items() if k.endswith("/loss")}
                if by_time:
                    postfix["step"] = self.step
                bar.set_postfix(postfix, steps_per_s=f"{last['perf/steps_per_sec']:.1f}")
            if self.out_of_time(bar):
                # An equal wall-clock budget is the fair comparison of schedules of different cost; the
                # images and evaluation of this last step follow the loop, outside the budget.
                self.stopped_by_time = True
                bar.close()  # its last frame first, so the line below is a line of its own
                log.info("trainer.max_time=%s reached at step %d (%.1f s)", t.max_time, self.step, self.train_time())
                break
            due = self.due_by_time()
            if sample_every and self.step % sample_every == 0:
                self.log_images()
            if (eval_every and self.step % eval_every == 0) or "eval" in due:
                self.run_eval()
            if (checkpoint_every and self.step % checkpoint_every == 0) or "checkpoint" in due:
                self.save()
            # Under torchrun one all-reduce tells every rank of a signal or a divergence on any rank.
            self.stopped_by, bad = self.dist.agree(nonfinite.flag() if nonfinite is not None and self.dist.enabled
                                                   else None, read=False)
            self._diverged(bad)
            if self.stopped_by:
                log.warning("rank %d: stopping at step %d (signal %d)", self.dist.rank, self.step, self.stopped_by)
                break

    def _train_only(self, key: str) -> None:
        """Gradients only for the networks this step updates (the others are inputs, not targets).

        Set when the phase changes, not at every step: a one-phase schedule (a VAE, a flow) sets it once.
        """
        if key == self._trainable:
            return
        self._trainable = key
        for k, ps in self.params.items():
            if k != key:
                for p in ps:
                    p.requires_grad_(False)
        for p in self.params[key]:
            p.requires_grad_(True)

    def _check_diverged(self) -> None:
        if self._nonfinite is not None:
            self._diverged(self.dist.agree(self._nonfinite.flag())[1])

    def _diverged(self, bad: tuple[int, int] | None) -> None:
        """Raise, on every rank alike, for the first non-finite (step, rank); None: all finite."""
        if bad is None:
            return
        step, rank = bad
        where = f" on rank {rank}" if self.dist.enabled else ""
        hint = "" if self.precision.mode == "32" else ", use trainer.precision=32"
        raise distributed.AgreedError(f"the loss became nan/inf at step {step}{where}; training diverged. Lower "
                                      f"optimizer.lr{hint} or set trainer.grad_clip (checkpoints/ keeps the last "
                                      "checkpoint written before that step)")

    def _check_finite(self, scalars: dict) -> None:
        # The scalars are averaged over ranks (and the scalers stay equal): every rank raises alike.
        if self.precision.mode == "16":
            # With loss scaling, non-finite steps are skipped and the scale backs off: the first
            # steps of a run are often skipped. Divergence is the scale collapsing.
            for k, sc in self.precision.scalers.items():
                scalars[f"perf/loss_scale/{k}"] = sc.get_scale()
            low = {k: v for k, v in scalars.items() if k.startswith("perf/loss_scale/") and v < 2.0 ** -24}
            if low:
                raise distributed.AgreedError(f"fp16 loss scale fell to {min(low.values()):.3g} by step {self.step}: "
                                              "the gradients are not finite even unscaled. Use trainer.precision=bf16 "
                                              "or 32, or lower optimizer.lr")
            return
        bad = [k for k, v in scalars.items() if not math.isfinite(v)]
        if bad:
            raise distributed.AgreedError(f"{bad[0]} became {scalars[bad[0]]} by step {self.step}; training "
                                          "diverged. Lower optimizer.lr, use trainer.precision=32 or set "
                                          "trainer.grad_clip (the last good checkpoint is kept in checkpoints/)")

    def log_scalars(self, scalars: dict) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, self.step)
        for k, o in self.optimizers.items():
            self.writer.add_scalar(f"lr/{k}", o.param_groups[0]["lr"], self.step)
        self.layout.update([*scalars, *(f"lr/{k}" for k in self.optimizers)])

    def log_images(self) -> None:
        """Model visuals from the fixed inputs to TensorBoard; the first also to samples/step_XXXXXX.png."""
        from genlab import viz

        if not self.dist.is_main:
            return
        fixed = dict(self.fixed)
        cap = self.tcfg.slow_sample_images
        if self.model.slow_sampling and cap is not None:
            if cap == 0:
                return
            fixed["n"] = min(fixed["n"], int(cap))
        with _side_effect_free(self.model, self.device, self.tcfg.sample_steps):
            fixed["generator"] = torch.Generator(self.device).manual_seed(self.fixed["seed"])
            images = self.model.visuals(fixed, self.data)
        for i, (name, img) in enumerate(images.items()):
            self.writer.add_image(f"images/{name}", img, self.step)
            if i == 0:
                viz.save_png(img, self.run_dir / "samples" / f"step_{self.step:06d}.png")

    def run_eval(self) -> dict:
        """Held-out metrics (the model's own and the evaluator's), to TensorBoard and eval_history.jsonl."""
        t0, c0, trained = time.perf_counter(), self.clock(), self.train_time()
        metrics = self.dist.broadcast(self._evaluate() if self.dist.is_main else None)
        if not self.dist.is_main:
            self.keep_best(metrics)  # best.pt's save is a collective every rank joins
            self._after_eval(metrics, c0)
            return metrics
        seconds = time.perf_counter() - t0
        self.eval_seconds += seconds
        self.writer.add_scalar("perf/eval_seconds", seconds, self.step)
        for k, v in metrics.items():
            # Non-numeric entries (e.g. a likelihood's protocol: binarisation, sample counts) go to the
            # history and the log only.
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"eval/{k}", v, self.step)
        self.layout.update(["perf/eval_seconds", *(f"eval/{k}" for k, v in metrics.items()
                                                   if isinstance(v, (int, float)) and not isinstance(v, bool))])
        with open(self.run_dir / "eval_history.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "train_time": round(trained, 3), **metrics}) + "\n")
        if metrics:
            log.info("step %d eval: %s", self.step, ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        self.keep_best(metrics)
        self._after_eval(metrics, c0)
        return metrics

    def _after_eval(self, metrics: dict, c0: float) -> None:
        self.last_eval = {"step": self.step, **metrics}
        if self.started is not None:
            # Evaluation is outside the max_time budget: a fast model evaluates more often per second
            # of training and must not lose training time for it.
            self.started += self.clock() - c0

    def _evaluate(self) -> dict:
        with _side_effect_free(self.model, self.device, self.tcfg.sample_steps):
            metrics = dict(self.model.evaluate(self.data, limit=eval_bound(self.tcfg, "nll_images"),
                                               k=eval_bound(self.tcfg, "nll_k")))
            if self.evaluator is not None:
                metrics.update(self.evaluator(self.model, self.data, self.step))
        return metrics

    def keep_best(self, metrics: dict) -> bool:
        """Write checkpoints/best.pt when trainer.best_metric improved (min or max per best_mode).

        The name matches a scalar exactly or up to a bracketed qualifier: `fid` matches `fid[lenet-mnist]`.
        """
        name = self.tcfg.best_metric
        if not name:
            return False
        keys = [k for k in metrics if k == name] or [k for k in metrics if k.split("[", 1)[0] == name]
        if not keys:
            log.warning("trainer.best_metric=%s is not among the evaluated metrics (%s)", name, ", ".join(metrics))
            return False
        value = float(metrics[keys[0]])
        if not math.isfinite(value):
            return False
        lower = str(self.tcfg.best_mode) == "min"
        if self.best is not None and not (value < self.best["value"] if lower else value > self.best["value"]):
            return False
        self.best = {"metric": keys[0], "value": value, "step": self.step}
        self.save("best")
        log.info("best %s=%.4g at step %d: checkpoints/best.pt", keys[0], value, self.step)
        return True
