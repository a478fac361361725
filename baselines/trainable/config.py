"""Hyper-parameters of the trainable routers: small YAML files per strategy, merged over ``base.yaml``.

``configs/base.yaml`` holds what every trainable router shares (backbone, projection, optimiser,
sequence length...). A strategy's file (``configs/<name>.yaml``) names its parent with ``extends``, its
``description``, its strategy ``plugins`` and overrides keys; each plugin's own settings come from
``configs/plugins/<plugin>.yaml`` (the strategy's values win). Constructor keyword arguments
(``--router-arg key=value`` on the command line) override any key, ``plugins`` included; an unknown key is an
error, so a typo never silently falls back to a default. The resolved dictionary is what
``RouterMeta.parameters`` records in every results file (``plugins`` only when it is not the strategy's own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PLUGIN_DIR = CONFIG_DIR / "plugins"


class ConfigError(ValueError):
    """A configuration file or an override cannot be used."""


def _read(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"no configuration '{name_or_path}' ({path} does not exist)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of hyper-parameters")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    merged = _read(parent if Path(str(parent)).suffix == "" else path.parent / parent)
    merged.update(data)
    return merged


def load_config(name: str, config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve strategy ``name``'s configuration, its plugins' settings, then a user file ``config`` (YAML), then
    ``overrides``. A user file and overrides may only set keys the strategy (with its plugins) knows.

    ``plugins`` (the strategy's plugin list, as set last) and ``description`` are in the result when the
    strategy's file has them.
    """
    cfg = _read(name)
    user = _read(config) if config is not None else {}
    overrides = dict(overrides or {})
    if "plugins" in cfg or "plugins" in user or "plugins" in overrides:
        plugins = overrides.pop("plugins", user.pop("plugins", cfg.get("plugins", [])))
        cfg["plugins"] = _coerce([], plugins, "plugins")
        for plugin in cfg["plugins"]:
            path = PLUGIN_DIR / f"{plugin}.yaml"
            for key, value in (_read(path) if path.is_file() else {}).items():
                cfg.setdefault(key, value)
    for source, extra in (("config file", user), ("argument", overrides)):
        unknown = sorted(set(extra) - set(cfg))
        if unknown:
            raise ConfigError(f"unknown {source} key(s) {unknown} for '{name}'; known keys: {', '.join(sorted(cfg))}")
        for key, value in extra.items():
            cfg[key] = _coerce(cfg[key], value, key)
    return cfg


def strategy_plugins(name: str) -> list[str]:
    """The plugins strategy ``name`` lists itself (before any override)."""
    return list(_read(name).get("plugins", []))


def _coerce(default: Any, value: Any, key: str) -> Any:
    """Keep a value's type in line with its default (YAML reads ``1e-4`` as a string, the CLI ``5`` as int)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if isinstance(default, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        number = float(value)
        if number != int(number):
            raise ConfigError(f"'{key}' takes an integer, got {value!r}")
        return int(number)
    if isinstance(default, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value
