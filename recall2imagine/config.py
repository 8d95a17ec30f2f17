"""Configuration: `defaults` from configs.yaml, named presets, command-line overrides.

Every key lives in `defaults`; its value there fixes the key's type. Presets and
overrides may only set known keys, and each value is parsed and checked against
that type. The result is a read-only `Config` with attribute access
(`config.run.steps`) and dotted item access (`config["run.steps"]`).
"""

from __future__ import annotations

import difflib
import importlib
import io
import re
from pathlib import Path

import ruamel.yaml

__all__ = ["Config", "ConfigError", "default_config_path", "load_presets", "build_config", "parse_value", "validate",
           "Rule", "Alias", "ANY", "positive", "non_negative", "one_of", "between", "subset_of"]


class ConfigError(ValueError):
    """A user-facing configuration problem: the message names the bad thing and what is allowed."""


def default_config_path() -> Path:
    """The configs.yaml of a source checkout, else the copy installed with the package."""
    source = Path(__file__).resolve().parents[1] / "configs" / "configs.yaml"
    if source.is_file():
        return source
    import importlib.resources

    return Path(str(importlib.resources.files("recall2imagine.configs") / "configs.yaml"))


def load_presets(path: Path | str | None = None) -> dict:
    """Reads the YAML file of presets: {name: nested dict}, `defaults` included."""
    path = Path(path) if path else default_config_path()
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"Cannot read config file {path}: {e.strerror or e}") from None
    try:
        presets = ruamel.yaml.YAML(typ="safe", pure=True).load(text)
    except ruamel.yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML:\n{e}") from None
    if not isinstance(presets, dict) or not isinstance(presets.get("defaults"), dict):
        raise ConfigError(f"Config file {path} must be a mapping of presets with a 'defaults' block.")
    return presets


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; keys keep file order."""
    flat = {}
    for key, value in tree.items():
        key = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


_BOOLS = {"true": True, "false": False}


def _parse_scalar(key: str, value, like):
    """Parses `value` (YAML scalar or command-line string) into the type of `like`."""
    kind = type(like)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _BOOLS:
                return _BOOLS[value.lower()]
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"Config key '{key}' expects {kind.__name__}, got {value!r}.")


def parse_value(key: str, value, like):
    """Parses `value` for `key` whose default is `like`; lists accept several
    values or one comma-separated string."""
    if isinstance(like, (list, tuple)):
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) == 1 and isinstance(items[0], str):
            items = [part for part in items[0].split(",") if part.strip()] if items[0].strip() else []
        element = like[0] if like else ""
        return [_parse_scalar(key, item.strip() if isinstance(item, str) else item, element) for item in items]
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ConfigError(f"Config key '{key}' takes one value, got {len(value)}: {list(value)}.")
        value = value[0]
    return _parse_scalar(key, value, like)


class Config:
    """Read-only nested configuration with attribute and dotted-key access.

    A section (`config.rssm`) is a Config of that section's keys alone."""

    def __init__(self, flat: dict):
        object.__setattr__(self, "_flat", dict(flat))

    def __getitem__(self, key: str):
        if key in self._flat:
            value = self._flat[key]
            return list(value) if isinstance(value, list) else value
        inner = {k[len(key) + 1:]: v for k, v in self._flat.items() if k.startswith(key + ".")}
        if inner:
            return Config(inner)
        raise KeyError(key)

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"Config has no key '{name}'") from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only: use config.update({...}) for a changed copy.")

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __iter__(self):
        return iter(dict.fromkeys(key.split(".")[0] for key in self._flat))

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and self.flat() == other.flat()

    def __repr__(self) -> str:
        return f"Config({self.flat()})"

    def flat(self) -> dict:
        """Dotted keys to values."""
        return dict(self._flat)

    def part(self, *options) -> "Config":
        """The slice a part receives: the keys of its OPTIONS mappings, nothing else."""
        return Config({key: self._flat[key] for mapping in options for key in mapping})

    def to_dict(self) -> dict:
        return _nest(self.flat())

    def update(self, updates: dict) -> "Config":
        """A copy with `updates` (dotted keys or regexes, values parsed and checked) applied."""
        flat = dict(self._flat)
        _apply(flat, _flatten(updates), source="update")
        return Config(flat)

    def to_yaml(self) -> str:
        yaml = ruamel.yaml.YAML()
        yaml.default_flow_style = False
        stream = io.StringIO()
        yaml.dump(self.to_dict(), stream)
        return stream.getvalue()

    def save(self, path: Path | str) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def load(cls, path: Path | str) -> "Config":
        """Reads a saved config.yaml (as written by `save`)."""
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"Cannot read saved config {path}: {e.strerror or e}") from None
        return cls.load_text(text, source=str(path))

    @classmethod
    def load_text(cls, text: str, source: str = "text") -> "Config":
        try:
            tree = ruamel.yaml.YAML(typ="safe", pure=True).load(text)
        except ruamel.yaml.YAMLError as e:
            raise ConfigError(f"Saved config {source} is not valid YAML:\n{e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"Saved config {source} is not a mapping of keys.")
        # A run saved before a key existed gets its default, which keeps the old behaviour.
        return cls({**build_config().flat(), **_flatten(tree)})


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    if not close:
        tail = key.split(".")[-1]
        close = [k for k in known if k.split(".")[-1] == tail][:3]
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _apply(flat: dict, updates: dict, source: str) -> None:
    """Applies dotted or regex keys in order, parsing each value against its default's type."""
    for key, value in updates.items():
        alias = declarations()["aliases"].get(key) if key not in flat else None
        if alias is not None and alias.target in flat:
            key, value = alias.target, alias.translate(value)
        if key in flat:
            matches = [key]
        else:
            try:
                pattern = re.compile(key)
            except re.error:
                pattern = None
            matches = [k for k in flat if pattern and pattern.fullmatch(k)]
            if not matches:
                raise ConfigError(
                    f"Unknown config key '{key}' (in {source}).{_suggest(key, flat)} "
                    "Run with --help for the top-level keys, --print_config for all of them."
                )
        for match in matches:
            flat[match] = parse_value(match, value, flat[match])


def build_config(names=(), overrides: dict | None = None, path=None) -> Config:
    """defaults <- presets in the order named <- overrides (dotted key -> value or list of strings)."""
    presets = load_presets(path)
    flat = _flatten(presets["defaults"])
    for name in names:
        if name not in presets or name == "defaults":
            valid = ", ".join(k for k in presets if k != "defaults")
            raise ConfigError(f"Unknown preset '{name}'. Valid presets: {valid}.")
        block = presets[name]
        if not isinstance(block, dict):
            raise ConfigError(f"Preset '{name}' must be a mapping of keys to values, got {block!r}.")
        _apply(flat, _flatten(block), source=f"preset '{name}'")
    _apply(flat, dict(overrides or {}), source="command line")
    return Config(flat)


def parse_cli(argv) -> tuple[list, dict, set]:
    """Splits `--configs a b --key v [v ...] --flag` into (preset names, overrides, flags).

    `--key=value` works too. The flags are `--help` and `--print_config`; any
    other `--key` must be followed by at least one value.
    """
    names, overrides, flags = [], {}, set()
    key = None
    for token in argv:
        if token.startswith("--") and len(token) > 2 and not _is_number(token):
            key, _, inline = token[2:].partition("=")
            if key in ("help", "print_config"):
                flags.add(key)
                key = None
                continue
            if key != "configs" and key in overrides:
                raise ConfigError(f"Config key '{key}' is given twice on the command line.")
            overrides.setdefault(key, [])
            if inline:
                overrides[key].append(inline)
        elif token in ("-h",):
            flags.add("help")
        elif key is None:
            raise ConfigError(f"Unexpected argument '{token}': values must follow a --key.")
        else:
            overrides[key].append(token)
    names = overrides.pop("configs", [])
    names = [n for name in names for n in name.split(",") if n]
    empty = [k for k, v in overrides.items() if not v]
    if empty:
        raise ConfigError(f"Config key '{empty[0]}' is given without a value.")
    return names, overrides, flags


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def usage(path=None) -> str:
    """The --help text: how to call, the presets and the top-level keys."""
    presets = load_presets(path)
    defaults = presets["defaults"]
    lines = [
        "usage: python recall2imagine/train.py [--configs PRESET ...] [--key.sub VALUE ...] [--print_config]",
        "",
        "Presets apply in the order given; then --key value overrides (dotted keys, e.g. --run.steps 1e5).",
        "--print_config prints the resolved config as YAML and exits.",
        "",
        "presets: " + ", ".join(k for k in presets if k != "defaults"),
        "",
        "top-level keys:",
    ]
    for key, value in defaults.items():
        shown = "{" + ", ".join(value) + "}" if isinstance(value, dict) else repr(value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- declarations
#
# Each part of the agent declares its options once, next to the code that reads them: a
# module-level OPTIONS mapping {dotted key: Rule}, optionally ALIASES {old key: Alias} and a
# check_options(config) function for rules that tie several keys together. configs.yaml
# writes every default; the default's type is the key's type, the Rule narrows the values.
# Every key of `defaults` is owned by exactly one part (checked by `declarations`).

PARTS = (
    "recall2imagine.run",          # run loop, environments, replay, JAX runtime
    "recall2imagine.world_model",  # latent state, losses, world-model optimiser
    "recall2imagine.cores",        # sequence cores: ssm_type and each core's options
    "recall2imagine.nets",         # encoder, decoder, reward and continue heads
    "recall2imagine.behavior",     # actor-critic in imagination
    "recall2imagine.explore",      # exploration ensemble
)


class Rule:
    """What values an option allows beyond its type; `allowed` says it in words."""

    def __init__(self, test, allowed: str, choices=()):
        self.test, self.allowed, self.choices = test, allowed, tuple(choices)

    def check(self, key: str, value) -> None:
        if self.test(value):
            return
        close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=3, cutoff=0.4)
        hint = f" Closest: {', '.join(repr(c) for c in close)}." if close else ""
        raise ConfigError(f"Config key '{key}' is {value!r}; allowed: {self.allowed}.{hint}")


ANY = Rule(lambda value: True, "any value of the default's type")
positive = Rule(lambda value: value > 0, "a positive number")
non_negative = Rule(lambda value: value >= 0, "a number >= 0")


def one_of(*choices) -> Rule:
    return Rule(lambda value: value in choices, ", ".join(map(repr, choices)), choices)


def between(low, high, low_open=False, high_open=False) -> Rule:
    """A number in [low, high], with either end open."""
    def test(value):
        return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    return Rule(test, f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")


def subset_of(*choices) -> Rule:
    """A non-empty list drawn from `choices`."""
    return Rule(lambda value: bool(value) and all(v in choices for v in value),
                f"a non-empty list of {', '.join(map(repr, choices))}", choices)


class Alias:
    """An old key that still works: its value goes to `target`, translated through `values`."""

    def __init__(self, target: str, values: dict):
        self.target, self.values = target, values

    def translate(self, value):
        items = value if isinstance(value, (list, tuple)) else [value]
        translated = [self.values.get(str(v).lower(), v) for v in items]
        return translated if isinstance(value, (list, tuple)) else translated[0]


_DECLARED: dict | None = None


def declarations() -> dict:
    """{"options": {key: Rule}, "aliases": {old key: Alias}, "owners": {key: part}, "checks": [fn]}."""
    global _DECLARED
    if _DECLARED is None:
        options, owners, aliases, checks = {}, {}, {}, []
        for name in PARTS:
            part = importlib.import_module(name)
            for key, rule in part.OPTIONS.items():
                if key in owners:
                    raise RuntimeError(f"Config key '{key}' is declared by both {owners[key]} and {name}.")
                options[key], owners[key] = rule, name
            aliases.update(getattr(part, "ALIASES", {}))
            if hasattr(part, "check_options"):
                checks.append(part.check_options)
        _DECLARED = {"options": options, "aliases": aliases, "owners": owners, "checks": checks}
    return _DECLARED


def check_declared(defaults: dict) -> None:
    """Every key of `defaults` is declared by a part and every declared key has a default."""
    declared = set(declarations()["options"])
    missing, extra = sorted(set(defaults) - declared), sorted(declared - set(defaults))
    if missing or extra:
        raise RuntimeError(f"configs.yaml defaults and the parts' OPTIONS disagree: undeclared {missing}, "
                           f"without a default {extra}. Declare each option in the part that reads it.")


def validate(config: Config) -> Config:
    """Checks every value against its part's Rule, then the parts' cross-key checks.

    Raises ConfigError naming the key, the value and what is allowed."""
    declared = declarations()
    check_declared(config.flat())
    for key, rule in declared["options"].items():
        rule.check(key, config[key])
    for check in declared["checks"]:
        check(config)
    return config
