"""Tiers: ``tier=embedded`` runs any preset at a tiny scale on the embedded tasks, on a CPU, with no downloads.

One table (conf/tier/embedded.yaml, ``tier.stand_ins``) says what replaces what. Applied to a composed run:

1. The method keeps its option (``method=fdd`` stays FDD) but gets its schema defaults back, the CPU-sized
   ones: a preset's real-scale method settings are dropped. SGFT's response model becomes ``response``.
2. ``student`` and ``benchmark`` become their stand-ins (the table; a real option not in it gets the default
   stand-in; a stand-in stays itself), ``teacher`` and ``trainer`` become ``reference`` and ``cpu``. Each is
   loaded from its preset file, so a preset's real-scale tweaks of these groups are dropped too.
3. The tier's sizes apply (train / val / test questions, epochs, new tokens, threads), and its caps
   (``stand_ins.caps``: e.g. D at most 8).
4. The command line's own value overrides apply last (``benchmark.n_train=48``, ``method.rounds=1``), so
   they always win.

In a sweep, the tier sweeper (hydra_plugins/sgft_lab_sweeper, the default sweeper) maps every swept group
option the same way (and caps swept values, ``stand_ins.caps``) and launches each distinct job once (nine real students x twelve tasks become two tiny students x three tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GROUPS = ("method", "student", "teacher", "benchmark", "trainer", "logger", "paths", "experiment", "tier",
          "hparams_search")


def stand_in(group: str, name: str, stand_ins: Any) -> str:
    """The preset that replaces option ``name`` of ``group`` under a tier (``stand_ins``: its table)."""
    if group in ("student", "student@method.response"):
        table, default = dict(stand_ins.student or {}), stand_ins.default_student
        keep = set(table.values()) | {default, stand_ins.response}
    elif group == "benchmark":
        table, default = dict(stand_ins.benchmark or {}), stand_ins.default_benchmark
        keep = set(table.values()) | {default}
        if name.startswith("embedded_"):
            return name
    else:
        return name
    if name in keep:
        return name
    return table.get(name, default)


def conf_dir() -> Path:
    """The bundled config folder (conf/ at the top of the repo; its copy inside an installed package)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError(f"sgft_lab's config folder is missing (looked in {here / 'conf'} and "
                            f"{here.parent / 'conf'}); reinstall the package")


def load_preset(group: str, name: str) -> dict:
    """A group option's values as written in conf/<group>/<name>.yaml (a plain file: no defaults list)."""
    from omegaconf import OmegaConf

    from .errors import ConfigError

    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"invalid config at `tier.stand_ins`: {group} preset {name!r} does not exist "
                          f"({path})")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in node.items() if k != "defaults"}


def apply_tier(plain: dict, task_overrides: list[str]) -> dict:
    """A composed config (plain containers) with its tier applied (see the module docstring)."""
    from omegaconf import OmegaConf

    from .config import METHOD_SCHEMAS, ConfigError, TierConfig, config_error, to_plain

    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.merge(OmegaConf.structured(TierConfig), plain["tier"])
        t: TierConfig = OmegaConf.to_object(node)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise config_error(e, prefix="tier") from None
    s, out = t.stand_ins, dict(plain)
    name = (plain.get("method") or {}).get("name")
    if name not in METHOD_SCHEMAS:
        raise ConfigError(f"invalid config at `method.name`: {name!r}; allowed: {', '.join(METHOD_SCHEMAS)}")
    method = to_plain(METHOD_SCHEMAS[name]())
    if "response" in method:
        method["response"] = load_preset("student", s.response)
    out["method"] = method
    out["student"] = load_preset("student", stand_in("student", plain["student"]["name"], s))
    out["benchmark"] = load_preset("benchmark", stand_in("benchmark", plain["benchmark"]["name"], s))
    out["teacher"] = {**load_preset("teacher", s.teacher), "replay_files": []}
    model = (plain.get("teacher") or {}).get("model")
    if model in (s.teacher_error_rate or {}):  # a teacher ablation: each teacher a reference teacher of its quality
        out["teacher"].update(model=model, error_rate=s.teacher_error_rate[model])
    out["trainer"] = load_preset("trainer", s.trainer)
    for group, key, value in (("benchmark", "n_train", t.n_train), ("benchmark", "n_val", t.n_val),
                              ("benchmark", "n_test", t.n_test), ("trainer", "max_epochs", t.max_epochs),
                              ("trainer", "threads", t.threads), ("student", "max_new_tokens", t.max_new_tokens)):
        if value is not None:
            out[group][key] = value
    for key, cap in (s.caps or {}).items():
        group, _, leaf = key.rpartition(".")
        node = out.get(group)
        if isinstance(node, dict) and isinstance(node.get(leaf), int) and node[leaf] > cap:
            node[leaf] = cap
    for key, value in value_overrides(task_overrides):
        _set(out, key, value)
    return out


def value_overrides(task_overrides: list[str]) -> list[tuple[str, Any]]:
    """(dotted key, value) of the command line's value overrides: not group choices, Hydra's or deletions."""
    if not task_overrides:
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = o.key_or_group
        if o.is_hydra_override() or o.is_delete() or o.package is not None or key in GROUPS or "/" in key:
            continue
        out.append((key, o.value()))
    return out


def _set(plain: dict, key: str, value: Any) -> None:
    node = plain
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[leaf] = value


MAPPED = ("student", "student@method.response", "benchmark")  # swept group choices a tier maps


def map_jobs(jobs: list[list[str]], stand_ins: Any) -> list[list[str]]:
    """Each job's group choices mapped to their stand-ins and capped values capped; duplicates dropped (first
    kept, order kept)."""
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        mapped = []
        for arg in job:
            key, sep, value = arg.partition("=")
            if sep and key in MAPPED:
                arg = f"{key}={stand_in(key, value, stand_ins)}"
            elif sep and key in (stand_ins.caps or {}) and value.isdigit():
                arg = f"{key}={min(int(value), stand_ins.caps[key])}"
            mapped.append(arg)
        if tuple(mapped) not in seen:
            seen.add(tuple(mapped))
            out.append(mapped)
    return out
