"""Checks of a workflow config that its JSON schema cannot express.

``workflow/schemas/config.schema.yaml`` checks every key's type and range; :func:`check_config`
runs right after it (in the ``Snakefile``, before any job starts) and checks what spans keys or
lives in the package: the attacks' victim is one of the trained detectors, a combination names
each parameter once, and ``detectors.<name>.model`` holds only fields of that detector's config
class, each of the field's type. Every error names the key, e.g.
``config key detectors.squeezedet.model.widht: ...``.
"""

from __future__ import annotations

import dataclasses


class ConfigError(ValueError):
    """A workflow config value is wrong; the message starts with ``config key <dotted.key>:``."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config key {key}: {message}")
        self.key = key


#: Fields of a detector config that the workflow sets itself (not options of ``model``).
_SET_BY_WORKFLOW = ("image_size",)


def _kind(default) -> tuple[type, ...] | None:
    """The Python types a YAML value may have for a field whose default is ``default`` (None:
    any)."""
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, (tuple, list)):
        return (list, tuple)
    if isinstance(default, dict):
        return (dict,)
    if default is None:  # optional shapes such as ``anchors``: null or a list
        return (list, tuple, type(None))
    return None


def _check_model(name: str, model: dict) -> None:
    from sae.detectors.configs import FIT_ANCHORS, MODEL_CONFIGS

    key = f"detectors.{name}.model"
    cfg_cls = MODEL_CONFIGS[name]
    fields = {f.name: f for f in dataclasses.fields(cfg_cls) if f.name not in _SET_BY_WORKFLOW}
    for option, value in model.items():
        if option not in fields:
            raise ConfigError(
                f"{key}.{option}", f"not an option of {cfg_cls.__name__}; options are {', '.join(sorted(fields))}"
            )
        f = fields[option]
        if option == "anchors" and value == FIT_ANCHORS:
            continue
        if f.default is not dataclasses.MISSING:
            kinds = _kind(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            kinds = _kind(f.default_factory())
        else:
            kinds = None
        if kinds is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            want = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{key}.{option}", f"must be {want}, got {value!r}")
        if option in ("width", "depth") and not value > 0:
            raise ConfigError(f"{key}.{option}", f"must be > 0, got {value!r}")
        if option == "dropout" and not 0 <= value < 1:
            raise ConfigError(f"{key}.{option}", f"must be in [0, 1), got {value!r}")
    try:
        cfg_cls(image_size=(64, 64), **model)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from None


def _check_combo(key: str, combo: str) -> None:
    from sae.constants import parse_combo

    parts = [p.strip() for p in combo.split("+")]
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise ConfigError(key, f"{combo!r} names {', '.join(twice)} more than once")
    try:
        parse_combo(combo)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _canonical(combo: str) -> tuple[str, ...]:
    from sae.constants import parse_combo

    return parse_combo(combo)


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` (naming the key) where a schema-valid config cannot run."""
    detectors = config.get("detectors", {})
    for name, spec in detectors.items():
        _check_model(name, spec.get("model") or {})
    attacks = config.get("attacks", {})
    victim = attacks.get("victim")
    if victim is not None and victim not in detectors:
        raise ConfigError(
            "attacks.victim", f"{victim!r} is not one of the trained detectors ({', '.join(detectors) or 'none'})"
        )
    combos = attacks.get("combos")
    if isinstance(combos, list):
        seen: dict[tuple[str, ...], str] = {}  # canonical combination → the key that named it first
        for i, combo in enumerate(combos):
            _check_combo(f"attacks.combos[{i}]", combo)
            canonical = _canonical(combo)
            if canonical in seen:
                raise ConfigError(f"attacks.combos[{i}]", f"{combo!r} is the same combination as {seen[canonical]}")
            seen[canonical] = f"attacks.combos[{i}]"
    if "headline" in attacks:
        _check_combo("attacks.headline", attacks["headline"])
