"""`genlab <command> [overrides]`: picks the command and hands the rest of argv to its Hydra app.

Before Hydra starts, the overrides are checked once (every value of a sweep included): an unknown
group option, a mistyped value or a semantic error ends with one line and exit status 2, before
any run folder is made. `trainer.resume=RUN` first reloads the overrides the resumed run used.
Paths given to run= and trainer.resume= are quoted for Hydra's grammar, so folders whose names hold
`=` or `,` (job folders of older versions) work. Hydra plugins that are optional extras are checked
first, so a missing one is one line naming the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
from importlib import resources
from pathlib import Path

COMMANDS = {
    "train": ("genlab.commands.train", "train a model:  genlab train model=wgan_gp dataset=mnist"),
    "sample": ("genlab.commands.sample", "sample a run:   genlab sample run=outputs/DATE/TIME out=x.png"),
    "eval": ("genlab.commands.eval", "evaluate a run: genlab eval run=outputs/DATE/TIME"),
    "featurenet": ("genlab.commands.featurenet", "train the feature network used by eval: genlab featurenet dataset=mnist"),
    "report": ("genlab.commands.report", "compare runs:   genlab report outputs/multirun/DATE/TIME"),
    "zoo": ("genlab.commands.zoo", "every model, one budget, one table: genlab zoo zoo.budget=5m (--help: keys, suites)"),
}
# Commands that parse their own arguments (no Hydra composition).
PLAIN = {"report", "zoo"}
GROUPS = ("model", "dataset", "optimizer", "trainer", "experiment", "hparams_search")
PATH_KEYS = ("run", "trainer.resume")
# Hydra plugins shipped as genlab extras: (override key, value prefix) -> (plugin module, extra).
PLUGINS = {
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hparams_search", ""): ("hydra_plugins.hydra_optuna_sweeper", "sweep"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("hydra/launcher", "submitit"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "ray"),
}
# Hydra flags after which a run is not started: skip our checks and let Hydra answer.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
              "--resolve", "--package", "-p"}
VALUE_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--cfg", "-c",
               "--package", "-p", "--info", "-i", "--experimental-rerun"}


def usage() -> str:
    lines = ["usage: genlab <command> [key=value ...] [hydra flags]", "", "commands:"]
    lines += [f"  {name:<11}{text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Each command but report is a Hydra app: `genlab train --help` lists its config groups,",
              "`genlab train --cfg job` prints the composed config, `-m` sweeps (multirun)."]
    return "\n".join(lines)


def fail(msg: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank finds the same mistake: say it once
        print(f"genlab: error: {msg}", file=sys.stderr)
    sys.exit(2)


def rank_flags(multirun: bool) -> list[str]:
    """Under torchrun, ranks > 0 leave the run folder to rank 0: Hydra gets a throwaway folder and no .hydra/."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return []
    if multirun:
        fail("-m (multirun) does not run under torchrun; start one torchrun per run "
             "(or sweep with a launcher whose jobs call torchrun)")
    if os.environ.get("RANK", "0") == "0":
        return []
    import atexit
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix="genlab-rank")
    atexit.register(shutil.rmtree, scratch, True)
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def group_options(group: str) -> list[str]:
    """The YAML options of a config group shipped in genlab.configs."""
    try:
        d = resources.files("genlab.configs") / group
        # Names starting with "_" are bases other options compose (e.g. model/_gan_base), not options.
        return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("_"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def split_flags(args: list[str]) -> tuple[list[str], list[str], bool, bool]:
    """(overrides, flags, multirun?, informational?) from a command's argv."""
    overrides, flags, multirun, info = [], [], False, False
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            flags.append(a)
            if a in ("-m", "--multirun"):
                multirun = True
            if a.split("=")[0] in INFO_FLAGS:
                info = True
            if a in VALUE_FLAGS and i + 1 < len(args) and not args[i + 1].startswith("-") and "=" not in args[i + 1]:
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return overrides, flags, multirun, info


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0])
    return value


def quote_paths(overrides: list[str]) -> list[str]:
    """run=/trainer.resume= values that name an existing path, quoted for Hydra (`=`, `,` in names)."""
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and _key(o) in PATH_KEYS and value[:1] not in ("'", '"') and Path(value).expanduser().exists():
            value = "'" + value.replace("'", "\\'") + "'"
        out.append(f"{key}{eq}{value}")
    return out


def check_plugins(overrides: list[str]) -> None:
    """An optional Hydra plugin that is asked for but not installed: one line naming the extra."""
    for o in overrides:
        key, _, value = o.partition("=")
        for (k, prefix), (module, extra) in PLUGINS.items():
            if _key(key) == k and value.startswith(prefix) and value not in ("null", ""):
                if importlib.util.find_spec(module) is None:
                    fail(f"{o} needs the {module.split('.')[-1].replace('_', '-')} plugin; "
                         f"install it with: pip install 'genlab[{extra}]'")


def check_run(overrides: list[str]) -> None:
    """run= (and checkpoint=) of sample/eval name a checkpoint file: checked before torch loads."""
    from genlab.errors import GenlabError
    from genlab.runpath import resolve

    values = {_key(o): _unquote(o.split("=", 1)[1]) for o in overrides if "=" in o}
    run, which = values.get("run"), values.get("checkpoint", "last")
    if not run or "${" in run or "${" in which:
        return
    try:
        resolve(run, which)
    except GenlabError as e:
        fail(str(e))


def expand_resume(overrides: list[str]) -> list[str]:
    """Prepend the overrides of the run being resumed, so the same config is composed again."""
    resume = [o for o in overrides if _key(o) == "trainer.resume"]
    if not resume:
        return overrides
    value = _unquote(resume[-1].split("=", 1)[1])
    if value in ("", "null", "None", "auto"):  # auto: this run folder's own last.pt, if any
        return overrides
    from genlab.engine import checkpoint as ckpt
    from genlab.errors import GenlabError

    try:
        state = ckpt.RunRecord.load(value).state  # kept: preflight and train read it from here
    except GenlabError as e:
        fail(str(e))
    given = {_key(o) for o in overrides}
    old = [o for o in state.get("overrides", []) if _key(o) not in given and not _key(o).startswith("hydra.")]
    return old + overrides


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def describe(e: BaseException) -> str:
    """One line from a Hydra/OmegaConf composition error and its cause."""
    parts = [_first_line(e)]
    cause = e.__cause__ or e.__context__
    if cause is not None and _first_line(cause) not in parts[0]:
        key = getattr(cause, "full_key", None)
        parts.append(f"{key}: {_first_line(cause)}" if key else _first_line(cause))
    return "; ".join(parts)


def check_groups(overrides: list[str]) -> None:
    for o in overrides:
        key = _key(o)
        if key not in GROUPS or "=" not in o:
            continue
        options = group_options(key)
        value = o.split("=", 1)[1]
        values = value.split(",") if "," in value and not value.startswith(("[", "{")) else [value]
        for v in values:
            v = v.strip()
            if v in ("null", "") and key == "experiment":
                continue
            if v not in options:
                fail(f"unknown {key} '{v}'; available: {', '.join(options)} (choose with {key}=NAME)")


def combinations(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists to check: each value of each sweep, the other sweeps at their first value."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - hydra's grammar errors
        fail(f"cannot parse overrides: {describe(e)}")
    choices = []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            key = text.split("=", 1)[0]
            try:
                vals = [f"{key}={v}" for v in o.sweep_string_iterator()]
            except Exception:  # noqa: BLE001 - e.g. interval sweeps have no finite list
                vals = []
            choices.append(vals or [None])
        else:
            choices.append([text])
    combos = [[c[0] for c in choices]]
    for i, c in enumerate(choices):
        for v in c[1:]:
            combo = [ch[0] for ch in choices]
            combo[i] = v
            combos.append(combo)
    return [[x for x in combo if x is not None] for combo in combos]


def precheck(command: str, overrides: list[str], multirun: bool) -> None:
    """Compose the config for every sweep value, validate it and run the pre-flight checks (device,
    data files, optimizer, resume checkpoint, run folder); one line and exit 2 on failure."""
    from hydra import compose, initialize_config_module

    from genlab.config import register_configs, validate
    from genlab.errors import GenlabError

    check_groups(overrides)
    if command == "train":
        from genlab.config import check_given_settings

        try:  # a bad trainer value on the command line fails before the composition (most of this check's time)
            check_given_settings(overrides)
        except GenlabError as e:
            fail(str(e))
    register_configs()
    flight = None
    for combo in combinations(overrides, multirun):
        try:
            with initialize_config_module("genlab.configs", version_base="1.3"):
                cfg = compose(config_name=command, overrides=combo, return_hydra_config=True)
        except Exception as e:  # noqa: BLE001 - Hydra raises several kinds
            fail(f"invalid config: {describe(e)}")
        from genlab.commands import preflight

        try:
            if command == "train":
                flight = flight or preflight.Preflight(multirun)
                validate(cfg)
                flight.train(cfg)
            else:
                preflight.check_counts(command, cfg)
        except GenlabError as e:
            fail(str(e))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `genlab` console script."""
    # Before torch loads OpenMP: idle OpenMP workers sleep instead of spinning, which on a shared
    # machine made a 2-thread update of a small MLP 18x slower (README, "Threads").
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmds = COMMANDS
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("--version", "-V"):
        from genlab import __version__

        print(f"genlab {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in cmds:
        fail(f"unknown command '{name}'; commands: {', '.join(cmds)} (see genlab --help)")
    if name in PLAIN:
        importlib.import_module(cmds[name][0]).main(rest)
        return
    overrides, flags, multirun, info = split_flags(rest)
    overrides = quote_paths(overrides)
    if not info:
        check_plugins(overrides)
        if name == "train":
            overrides = expand_resume(overrides)
        if name in ("sample", "eval") and not any(_key(o) == "run" for o in overrides):
            fail(f"genlab {name} needs run=<run folder>, e.g. genlab {name} run=outputs/2026-01-01/12-00-00")
        if name in ("sample", "eval") and not multirun:
            check_run(overrides)
        precheck(name, overrides, multirun)
    if name == "train" and not info:
        overrides = overrides + rank_flags(multirun)
    sys.argv = [f"genlab-{name}", *flags, *overrides]
    if info:  # --help, --cfg, ...: answered from the config alone, without torch (a quick CLI)
        if not answer_info(name, sys.argv[1:]):
            info_app(name)()
        return
    module = importlib.import_module(cmds[name][0])
    module.main()


def config_groups(root=None, parent: str = "") -> dict[str, list[str]]:
    """genlab's config groups and their options, read from the config tree (not Hydra's repository)."""
    root = resources.files("genlab.configs") if root is None else root
    groups = {}
    for d in sorted(root.iterdir(), key=lambda p: p.name):
        name = f"{parent}{d.name}"
        if not d.is_dir() or d.name.startswith(("_", ".")) or name == "hydra":
            continue
        options = sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("_"))
        if options:
            groups[name] = options
        groups.update(config_groups(d, f"{name}/"))
    return groups


def answer_info(name: str, argv: list[str]) -> bool:
    """`--help` and `--cfg` answered with one composition (Hydra's own help lists every group through
    a deep copy of its whole config repository each: seconds); False for the flags left to Hydra."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.hydra_help or args.info or args.shell_completion or args.config_path or args.config_name \
            or args.config_dir or args.multirun or not (args.help or args.cfg):
        return False
    check_groups(args.overrides)
    import string

    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from genlab.config import register_configs

    register_configs()
    with initialize_config_module("genlab.configs", version_base="1.3", job_name=name):
        hydra = GlobalHydra.instance().hydra
        try:
            if not args.help:
                hydra.show_cfg(config_name=name, overrides=args.overrides, cfg_type=args.cfg,
                               package=args.package, resolve=args.resolve)
                return True
            cfg = hydra.compose_config(config_name=name, overrides=args.overrides, run_mode=RunMode.RUN,
                                       from_shell=True, with_log_configuration=False)
        except Exception as e:  # noqa: BLE001 - Hydra raises several kinds
            fail(f"invalid config: {describe(e)}")
        HydraConfig.instance().set_config(cfg)
        template = string.Template(cfg.hydra.help.template)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        if args.resolve:
            OmegaConf.resolve(job)
        groups = "".join(f"{g}: {', '.join(opts)}\n" for g, opts in config_groups().items())
        hydra_groups = hydra.format_config_groups(lambda g: g == "hydra" or g.startswith("hydra/")) \
            if "HYDRA_CONFIG_GROUPS" in cfg.hydra.help.template else ""
        print(template.substitute(FLAGS_HELP=hydra.format_args_help(parser), APP_CONFIG_GROUPS=groups,
                                  HYDRA_CONFIG_GROUPS=hydra_groups, CONFIG=OmegaConf.to_yaml(job)))
    return True


def info_app(name: str):
    """A Hydra app for the command's config that runs nothing: it answers Hydra's informational flags."""
    import hydra

    from genlab.config import register_configs

    register_configs()

    def app(cfg) -> None:
        raise RuntimeError("informational Hydra flags do not run the command")

    # Hydra names the app (help text, job name) after the task function's module: the command's.
    app.__module__ = COMMANDS[name][0]
    return hydra.main(version_base="1.3", config_path="pkg://genlab.configs", config_name=name)(app)


if __name__ == "__main__":
    main()
