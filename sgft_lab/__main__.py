"""`python -m sgft_lab [overrides]` / `sgft-lab`: compose the Hydra config, validate it, run the method.

Expected failures -- a bad config key or value, a missing data file, a teacher that cannot be reached, a
filter that kept nothing (sgft_lab/errors.py) -- end with one line ``sgft_lab: <message>`` and status 2;
``HYDRA_FULL_ERROR=1`` shows their traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from .config import register_schema
from .teachers.secrets import redact_text
from .tiers import conf_dir

register_schema()

CONFIG_PATH_ENV = "SGFT_LAB_CONFIG_PATH"


def help_groups(searchpath=None) -> str:
    """The config groups and their options for ``--help`` (conf/hydra/help/sgft_lab.yaml): every option file
    of the bundled conf/ and of the ``file://`` folders on ``hydra.searchpath``, one group a line. Unlike
    Hydra's own listing it leaves out the typed schemas the ConfigStore holds (``method: ..._schema``), and
    nested options are shown the way they are chosen (``experiment: fine_tune_cot/main``)."""
    import textwrap
    from pathlib import Path

    groups: dict[str, set[str]] = {}
    roots = [conf_dir()] + [Path(str(s)[len("file://"):]) for s in (searchpath or [])
                            if str(s).startswith("file://")]
    for root in roots:
        if not root.is_dir():
            continue
        for f in root.rglob("*.yaml"):
            group, *rest = f.relative_to(root).with_suffix("").parts
            if rest and group != "hydra":
                groups.setdefault(group, set()).add("/".join(rest))
    width = max(map(len, groups), default=0) + 2
    lines = [textwrap.fill(", ".join(sorted(groups[g])), 110, initial_indent=f"  {g + ':':<{width}}",
                           subsequent_indent=" " * (width + 2), break_on_hyphens=False)
             for g in sorted(groups)]
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the template with string.Template


def _register_help_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sgft_lab_groups"):
        OmegaConf.register_new_resolver("sgft_lab_groups", help_groups)


_register_help_resolver()


def normalize_overrides(args: list[str]) -> list[str]:
    """Accept both `+experiment=NAME` and `experiment=NAME`.

    Hydra 1.3 allows only one of them: with `optional experiment: null` in the defaults list (needed for
    the plain form) the `+` form fails with "Multiple values for experiment". So `+experiment=` is
    rewritten to `experiment=` before Hydra parses the command line.
    """
    return [a[1:] if a.startswith("+experiment=") else a for a in args]


# The bundled conf/: the repo's top-level folder in a source tree (sgft_lab/conf is a symlink to it), its
# copy inside the package once installed from a wheel or sdist (tiers.conf_dir finds either). An absolute
# path, so it depends neither on the working directory nor on how the module was started.
@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(dcfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from hydra.types import RunMode

    from .config import validate
    from .errors import SgftError
    from .run import execute, hydra_job

    try:
        check_experiment(HydraConfig.get().runtime.choices.get("experiment"), dcfg.get("experiment"))
        cfg = validate(dcfg, task_overrides=list(HydraConfig.get().overrides.task))
        results = execute(cfg, hydra_job())
    except SgftError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"sgft_lab: {redact_text(str(e))}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            e.reported = True  # printed once here; run_and_report says the sweep had a failed job
            raise  # this job fails, the sweep's other jobs still run
        sys.exit(2)
    # Returned for sweepers (e.g. Optuna): validation accuracy at the dev-selected epoch (never a test number).
    return next((e["accuracy"] for e in results.get("entries", []) if e["split"] == "val"
                 and e["selection"] == "dev_selected" and e["system"] == "student" and e["round"] is None), None)


def check_experiment(choice: str | None, loaded: str | None) -> None:
    """``experiment=NAME`` names a preset that exists. Hydra skips a missing option of an ``optional`` group
    silently, so a misspelt preset would run the default; every preset sets ``experiment: <its name>``."""
    from .config import ConfigError

    if choice in (None, "null") or loaded == choice:
        return
    root = conf_dir() / "experiment"
    known = sorted(str(f.relative_to(root).with_suffix("")) for f in root.rglob("*.yaml"))
    raise ConfigError(f"invalid config at `experiment`: no preset {choice!r}; allowed: {', '.join(known)}")


def one_line(e: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (which keeps its traceback)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from .config import config_error
    from .errors import SgftError

    if isinstance(e, SgftError):
        return str(e)
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, option = str(e.missing_cfg_file).rpartition("/")
        allowed = ", ".join(o for o in e.options if not o.endswith("_schema"))
        return f"invalid config at `{group}`: no option {option!r}; allowed: {allowed}"
    if isinstance(e, (ConfigCompositionException, OverrideParseException, MissingConfigException)):
        cause = e.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return str(config_error(cause))
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        return f"invalid config: {text}"
    if isinstance(e, OmegaConfBaseException):
        return str(config_error(e))
    return None


def _reraise(e: BaseException):
    def again():
        raise e

    return again


def _install_error_report() -> None:
    """Route Hydra's top-level error report through :func:`one_line` (Hydra 1.3 prints every exception
    with a stack trace and exits 1; expected failures here are one line and status 2)."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report
    if getattr(original, "sgft_lab", False):
        return

    def run_and_report(func):
        try:
            return func()
        except Exception as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            msg = one_line(e)
            if msg is None:
                return original(_reraise(e))
            if getattr(e, "reported", False):  # a sweep job's error, printed when the job failed
                msg = "a sweep job failed (its error is above); the sweep's other jobs ran"
            sys.stderr.write(f"sgft_lab: {redact_text(msg)}\n")
            sys.exit(2)

    run_and_report.sgft_lab = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report

    # A bad command-line flag: argparse prints its usage block, then the error; here it is one line.
    hydra_main = sys.modules["hydra.main"]  # the module (`hydra.main` the attribute is the decorator)

    def get_args_parser():
        parser = hydra_utils.get_args_parser()

        def error(message: str):
            sys.stderr.write(f"sgft_lab: {message} (see python -m sgft_lab --help)\n")
            sys.exit(2)

        parser.error = error  # type: ignore[method-assign]
        return parser

    hydra_main.get_args_parser = get_args_parser


def config_searchpath(args: list[str], env: str | None) -> list[str]:
    """``args`` with the config folders named in ``env`` (the value of SGFT_LAB_CONFIG_PATH) appended to
    Hydra's search path, as a ``hydra.searchpath=[...]`` override merged into any the command line has.

    ``env`` lists directories separated by os.pathsep (``DIR1:DIR2``); ``file://`` and ``pkg://`` entries are
    kept as they are. Hydra looks for configs in the bundled conf/ first, then in these folders in order, so a
    folder adds presets and group options (``+experiment=mine``, ``student=my_model``) without shadowing the
    bundled ones. Raises ValueError naming an entry that is not a directory.
    """
    import re

    if not env or not env.strip():
        return args
    parts = re.split(r":(?!//)", env) if os.pathsep == ":" else env.split(os.pathsep)
    entries = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if "://" not in part:
            path = os.path.abspath(os.path.expanduser(part))
            if not os.path.isdir(path):
                raise ValueError(f"{CONFIG_PATH_ENV} names {part!r}, which is not a directory")
            part = "file://" + path
        entries.append(part)
    if not entries:
        return args

    def quote(s: str) -> str:
        return "'" + s.replace("'", "\\'") + "'"

    out = list(args)
    for i, arg in enumerate(out):
        key, sep, _ = arg.partition("=")
        if sep and key.lstrip("+") == "hydra.searchpath":
            from hydra.core.override_parser.overrides_parser import OverridesParser
            from hydra.errors import HydraException

            try:
                given = OverridesParser.create().parse_override(arg).value()
            except HydraException:
                return args  # Hydra reports the malformed override itself
            if not isinstance(given, list) or not all(isinstance(g, str) for g in given):
                return args
            merged = given + [e for e in entries if e not in given]
            out[i] = f"{key}=[{','.join(quote(s) for s in merged)}]"
            return out
    # Hydra's argparse takes the overrides as one positional list: put this one right before the first
    # override (never after a flag that takes a value), or first of all when there is none.
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                   "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
    at = next((i for i, a in enumerate(out) if not a.startswith("-") and ("=" in a or a.startswith("~"))
               and (i == 0 or out[i - 1] not in takes_value)), 0)
    return out[:at] + [f"hydra.searchpath=[{','.join(quote(s) for s in entries)}]"] + out[at:]


def main() -> None:
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    try:
        sys.argv[1:] = config_searchpath(sys.argv[1:], os.environ.get(CONFIG_PATH_ENV))
    except ValueError as e:
        sys.stderr.write(f"sgft_lab: {e}\n")
        sys.exit(2)
    _install_error_report()
    _app()


if __name__ == "__main__":
    main()
