"""`python -m sgft_lab [overrides]` / `sgft-lab`: compose the Hydra config, validate it, run the method."""

from __future__ import annotations

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

    from .config import ConfigError, validate

    try:
        cfg = validate(dcfg)
    except ConfigError as e:
        print(f"sgft_lab: {e}", file=sys.stderr)
        sys.exit(2)
    if cfg.trainer.threads:  # before any model (student or local teacher) is built
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    from .methods import get_method

    results = get_method(cfg.method.name)(cfg, HydraConfig.get().runtime.output_dir)
    # Returned for sweepers (e.g. Optuna): validation accuracy at the selected epoch.
    return (results.get("metrics", {}).get("dev_selected") or {}).get("val_accuracy")


def main() -> None:
    sys.argv[1:] = normalize_overrides(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
