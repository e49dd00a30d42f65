"""Hydra's basic sweeper, tier-aware: the default sweeper of sgft_lab.

Hydra loads sweepers only from the ``hydra_plugins`` namespace, so this thin class lives here; what it does
is sgft_lab.tiers.map_jobs. It is stored as ``hydra/sweeper: basic`` (Hydra scans its core plugins first,
then this namespace, so this entry replaces the core one): every sweep that names no other sweeper uses it,
and choosing another one (``+hparams_search=optuna``) still works. Without a tier it is the basic sweeper.
Under a tier (``-m +experiment=NAME tier=embedded``) every swept student / benchmark becomes its stand-in
(``student=t5-large`` -> ``student=tiny``) and each distinct job is launched once, so a preset's paper-scale
grid becomes its small CPU grid.
"""

# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
from typing import Any, List

from dataclasses import dataclass
from typing import Dict, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override


class TierSweeper(BasicSweeper):
    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.tier = config.get("tier")

    def sweep(self, arguments: List[str]) -> Any:
        # A failed job ends the sweep in an exception before Hydra's on_multirun_end callbacks run: print the
        # sweep's summary (sgft_lab/sweep.py) here for that case.
        try:
            return super().sweep(arguments)
        except Exception:
            from sgft_lab.sweep import print_summary

            print_summary(self.config.hydra.sweep.dir)
            raise

    def split_arguments(  # type: ignore[override]
        self, overrides: List[Override], max_batch_size: Any
    ) -> List[List[List[str]]]:
        from sgft_lab.tiers import map_jobs

        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        if not self.tier:
            return batches
        jobs = map_jobs([job for batch in batches for job in batch], self.tier.stand_ins)
        size = max_batch_size or len(jobs) or 1
        return [jobs[i:i + size] for i in range(0, len(jobs), size)]


@dataclass
class TierSweeperConf:
    _target_: str = "hydra_plugins.sgft_lab_sweeper.TierSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=TierSweeperConf, provider="sgft_lab")
