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

register_schema()


def normalize_overrides(args: list[str]) -> list[str]:
    """Accept both `+experiment=NAME` and `experiment=NAME`.

    Hydra 1.3 allows only one of them: with `optional experiment: null` in the defaults list (needed for
    the plain form) the `+` form fails with "Multiple values for experiment". So `+experiment=` is
    rewritten to `experiment=` before Hydra parses the command line.
    """
    return [a[1:] if a.startswith("+experiment=") else a for a in args]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _app(dcfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from hydra.types import RunMode

    from .config import validate
    from .errors import SgftError
    from .run import execute, hydra_job

    try:
        cfg = validate(dcfg, task_overrides=list(HydraConfig.get().overrides.task))
        results = execute(cfg, hydra_job())
    except SgftError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"sgft_lab: {e}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # this job fails, the sweep goes on, and lists it at the end
        sys.exit(2)
    # Returned for sweepers (e.g. Optuna): validation accuracy at the dev-selected epoch (never a test number).
    return next((e["accuracy"] for e in results.get("entries", []) if e["split"] == "val"
                 and e["selection"] == "dev_selected" and e["system"] == "student" and e["round"] is None), None)


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
            sys.stderr.write(f"sgft_lab: {msg}\n")
            sys.exit(2)

    run_and_report.sgft_lab = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def main() -> None:
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    _install_error_report()
    _app()


if __name__ == "__main__":
    main()
