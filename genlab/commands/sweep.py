"""What a run records about itself (status.json) and what a sweep reports when it ends.

Every train job writes `status.json` in its run folder: state (running | done | failed |
interrupted), the error line, the step reached, training time (the trainer.max_time clock:
periodic evaluation excluded, earlier segments of a resumed run included), this job's wall time,
samples seen and the objective. In a
sweep (`-m`) a failing job is recorded there and the next job starts; Hydra's `on_multirun_end`
callback then prints one summary line from those files and ends with exit status 1 if any failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

STATUS = "status.json"


def first_line(e: BaseException) -> str:
    """The one line a user sees for an exception (its type too unless it is a user error)."""
    from genlab.errors import GenlabError

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, GenlabError) and text else f"{type(e).__name__}: {text}".rstrip(": ")


class RunStatus:
    """The run folder's status.json, rewritten (atomically) as the run goes."""

    def __init__(self, run_dir: Path, overrides: list[str] | None = None, job: int | None = None,
                 enabled: bool = True):
        self.path = Path(run_dir) / STATUS
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.trainer = None
        self.objective: dict | None = None
        from genlab import __version__, machine_name, source_commit

        # The genlab commits and the machines that trained this run, oldest first: a resume at another
        # commit or on another machine appends its own.
        before = (read_status(run_dir) or {}) if enabled else {}
        commits, machines = (list(before.get(k) or []) for k in ("commits", "machines"))
        for seen, now in ((commits, source_commit()), (machines, machine_name())):
            if now not in seen[-1:]:
                seen.append(now)
        self.record: dict = {"state": "running", "job": job, "overrides": list(overrides or []),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "genlab": __version__,
                             "commits": commits, "machines": machines}

    def write(self, state: str, error: str | None = None) -> dict:
        r = self.record
        r["state"] = state
        r["error"] = error
        t = self.trainer
        if t is not None:
            r["step"] = t.step
            r["max_steps"] = int(t.tcfg.max_steps)
            r["train_time"] = round(t.train_time(), 3)
            r["samples_seen"] = samples_seen(t.step, int(t.tcfg.batch_size), getattr(t, "schedule", None) or [])
            r["stopped_by"] = "max_time" if t.stopped_by_time else ("max_steps" if state == "done" else None)
        else:
            r.setdefault("step", 0)
        r["wall_time"] = round(time.perf_counter() - self.t0, 3)
        torch = sys.modules.get("torch")  # never imported here: status is written from runs that have it
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            r["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        r["objective"] = self.objective
        r["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if not self.enabled:
            return r
        tmp = self.path.with_name(STATUS + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(r, indent=1) + "\n")
            os.replace(tmp, self.path)
        except OSError as e:
            from genlab.engine.checkpoint import os_cause
            from genlab.errors import GenlabError

            tmp.unlink(missing_ok=True)
            raise GenlabError(f"cannot write {self.path} (the run's status record): {os_cause(e)}") from None
        return r


def samples_seen(steps: int, batch_size: int, schedule) -> int:
    """Training examples drawn in `steps` trainer steps: a batch per repeat of each phase that needs data,
    on the ceil(steps / every) steps where the phase is due (steps 0, every, 2*every, ...)."""
    return batch_size * sum(s.repeat * -(-steps // s.every) for s in schedule if s.needs_data)


def read_status(run_dir: Path) -> dict | None:
    """A run folder's status.json, or None (runs of older versions have none)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep folder, in job order."""
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(dirs, key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30,
                                       p.name))


def summary(sweep_dir: Path) -> tuple[str, int]:
    """'3 jobs: 2 done, 1 failed (job 1: ...)' from the jobs' status files, and the number failed."""
    counts: dict[str, int] = {}
    failed = []
    jobs = job_dirs(sweep_dir)
    for d in jobs:
        st = read_status(d) or {"state": "unknown"}
        counts[st["state"]] = counts.get(st["state"], 0) + 1
        if st["state"] != "done":
            err = st.get("error") or st["state"]
            failed.append(f"job {d.name}: {err if len(err) <= 90 else err[:87] + '...'}")
    parts = [f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: kv[0] != "done")]
    line = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: {', '.join(parts) or 'none'}"
    if failed:
        line += f" ({'; '.join(failed)})"
    return line, len(failed)


class SweepCallback(Callback):
    """Hydra callback: after a sweep, one summary line; exit status 1 if any job did not finish."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        line, n_failed = summary(sweep_dir)
        print(f"genlab: sweep {sweep_dir}: {line}", file=sys.stderr if n_failed else sys.stdout)
        if n_failed:
            sys.exit(1)


def parallel_threads(num_threads, launcher_cfg) -> int | None:
    """Torch threads per job: as set, else cores // parallel jobs for a launcher with n_jobs (joblib)."""
    if num_threads:
        return int(num_threads)
    n_jobs = (launcher_cfg or {}).get("n_jobs")
    if not n_jobs:
        return None
    cores = os.cpu_count() or 1
    n = int(n_jobs) if int(n_jobs) > 0 else max(1, cores + 1 + int(n_jobs))  # joblib: -1 = all cores
    return max(1, cores // n)
