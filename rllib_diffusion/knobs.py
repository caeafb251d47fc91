"""Knobs declared once and derived everywhere else.

An algorithm knob is a keyword-only argument of a config class's own ``training()``
(documented in its ``Args:`` section, default set once in ``__init__``), or an RLlib
knob the class lists in ``RLLIB_KNOBS`` (name → help). A model knob or a run setting is
a field of a dataclass (documented in its ``Attributes:`` section): the RLModule's model
config, or a command's settings (run control). From those declarations this module
derives command-line flags (one flag name per knob across all commands, the help text
and the default shown in ``--help``), the values a user actually typed, and the
one-line refusal of a knob the chosen algorithm does not use. No ray import at module
level: the CLI builds parsers before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from rllib_diffusion.modules.model_config import ConfigError

__all__ = [
    "Knob",
    "add_knob_args",
    "check_knobs",
    "declared_knobs",
    "flag_name",
    "given_knobs",
    "settings_knobs",
    "split_knobs",
    "Range",
    "check_ranges",
    "in_range",
    "Count",
    "NonNegative",
    "Positive",
    "PositiveFloat",
    "NonNegativeFloat",
    "Probability",
    "Discount",
]

#: Flag names that are not the knob's name with dashes (one name across all commands).
FLAG_ALIASES = {"out_dir": "out", "clip_param": "clip", "clip_param_base": "clip_base"}

#: Docstring line of an ``Args:`` entry: ``name: text`` or ``a / b: text``.
_ARG_LINE = re.compile(r"^\s*([A-Za-z_][\w]*(?:\s*/\s*[A-Za-z_][\w]*)*)\s*:\s*(.*)$")


@dataclass(frozen=True)
class Knob:
    """One algorithm knob.

    Attributes:
        name: attribute of the config (and keyword of ``training()``), e.g. ``actor_lr``.
        default: the value of a fresh config instance.
        type: scalar type of a flag value (``float``, ``int``, ``bool``, ``str``).
        help: first sentence(s) from the ``Args:`` docs.
        optional: None is an allowed value (``--target-kl none``): the default is None
            or the docs say what None means.
        sequence: the knob takes several values (``--hidden-dims 256 256``).
        choices: allowed values, when declared as a ``Literal``.
        required: a settings field without a default (the flag must be given).
        range: allowed values (checked when the flag is parsed), if declared.
    """

    name: str
    default: Any
    type: type
    help: str
    optional: bool = False
    sequence: bool = False
    choices: tuple[Any, ...] | None = None
    required: bool = False
    range: Range | None = None

    @property
    def flag(self) -> str:
        return flag_name(self.name)

    @property
    def hint(self) -> Any:
        """The knob's type as an annotation (``tuple[int, ...] | None``)."""
        base: Any = tuple[self.type, ...] if self.sequence else self.type
        return base | None if self.optional else base

    def names(self) -> tuple[str, ...]:
        """The knob's name and its flag's spelling as a name (``clip_param``, ``clip``)."""
        return tuple(dict.fromkeys((self.name, self.flag[2:].replace("-", "_"))))


def flag_name(name: str) -> str:
    """``actor_lr`` → ``--actor-lr``; RLlib's ``lambda_`` → ``--lambda``; the names of
    :data:`FLAG_ALIASES` (``out_dir`` → ``--out``)."""
    return "--" + FLAG_ALIASES.get(name, name).rstrip("_").replace("_", "-")


def _is_ours(cls: type) -> bool:
    """Not one of RLlib's config classes (whose ``training()`` args are RLlib's)."""
    return cls.__module__.split(".")[0] not in ("ray", "builtins")


def _doc_args(doc: str | None, section: str = "Args:") -> dict[str, str]:
    """Entries of a docstring ``section`` (``Args:``, ``Attributes:``): name → text
    (continuation lines joined)."""
    out: dict[str, str] = {}
    in_args, current = False, []
    for raw in (doc or "").splitlines():
        line = raw.strip()
        if line.startswith(section):
            in_args, line = True, line[len(section) :].strip()
        elif re.fullmatch(r"[A-Z]\w*:", line):  # the next section (Returns:, Raises:)
            in_args = False
        if not in_args or not line or line.startswith("**"):
            current = [] if line.startswith("**") else current
            continue
        m = _ARG_LINE.match(line)
        if m:
            current = [n.strip() for n in m.group(1).split("/")]
            out.update({n: m.group(2).strip() for n in current})
        else:
            out.update({n: f"{out[n]} {line}" for n in current})
    return out


def _scalar_type(annotation: Any) -> tuple[type, bool, bool, tuple | None]:
    """``(type, optional, sequence, choices)`` of a ``training()`` annotation."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing, **vars(typing)}, {})  # noqa: S307
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        t, _, seq, choices = _scalar_type(rest[0])
        return t, len(rest) < len(args), seq, choices
    if origin is typing.Literal:
        return type(args[0]), False, False, tuple(args)
    if origin in (tuple, list):
        return _scalar_type(args[0])[0], False, True, None
    if origin is dict:
        return dict, False, False, None
    return (annotation if isinstance(annotation, type) else str), False, False, None


def declared_knobs(config_cls: type) -> list[Knob]:
    """The knobs of ``config_cls``: keyword-only args of its own (non-RLlib) ``training()``
    methods down its MRO, plus ``RLLIB_KNOBS``; defaults from a fresh instance."""
    instance = config_cls()
    found: dict[str, Knob] = {}
    for cls in config_cls.__mro__:
        if not _is_ours(cls) or "training" not in vars(cls):
            continue
        fn = vars(cls)["training"]
        docs = _doc_args(fn.__doc__)
        hints = typing.get_type_hints(fn)
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in found:
                continue
            t, _, seq, choices = _scalar_type(hints.get(p.name, str))
            default, text = getattr(instance, p.name), docs.get(p.name, "")
            # RLlib annotates every training() arg ``X | None``: None is a real value
            # only where the default is None or the docs say what None means.
            optional = default is None or "None" in text
            found[p.name] = Knob(p.name, default, t, text, optional, seq, choices)
    for name, text in getattr(config_cls, "RLLIB_KNOBS", {}).items():
        value = getattr(instance, name)
        t = type(value) if value is not None else float
        found.setdefault(name, Knob(name, value, t, text, optional=value is None))
    return list(found.values())


def settings_knobs(cls: type, *, exclude: tuple[str, ...] = ()) -> list[Knob]:
    """The fields of dataclass ``cls`` (a model config or a command's settings) as knobs:
    types from the annotations, help from the ``Attributes:`` docs, defaults from the
    field (a field without one is a required flag)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # a subclass's docs win over its bases'
        docs.update(_doc_args(base.__doc__, "Attributes:") if _is_ours(base) else {})
    hints = typing.get_type_hints(cls)
    ranges = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        t, optional, seq, choices = _scalar_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        required = default is None and f.default is dataclasses.MISSING and not optional
        text = docs.get(f.name, "")
        declared = _range_of(ranges[f.name])[0]
        out.append(Knob(f.name, default, t, text, optional, seq, choices, required, declared))
    return out


def _parse_value(knob: Knob):
    def parse(text: str) -> Any:
        if knob.optional and text.lower() == "none":
            return None
        if knob.type is bool:
            return _parse_bool(text)
        if knob.type is dict:
            return _parse_json_object(text)
        value = knob.type(text)
        if knob.range is not None and not knob.range.ok(value):
            raise argparse.ArgumentTypeError(f"must be {knob.range.describe()}, got {text}")
        return value

    parse.__name__ = knob.type.__name__  # argparse's "invalid int value: 'x'"
    return parse


def in_range(t: type, allowed: Range):
    """argparse ``type=`` of a hand-written flag: ``t`` values within ``allowed``."""
    return _parse_value(Knob("value", None, t, "", range=allowed))


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_json_object(text: str) -> dict[str, float]:
    """A JSON object of name → number, e.g. ``'{"rollout": 1}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of amounts like '{{\"rollout\": 1}}', got {text!r}"
        )
    return {str(k): float(v) for k, v in value.items()}


class _BoolFlag(argparse.Action):
    """``--x`` (true), ``--x false`` and ``--no-x`` (false) for a bool knob."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        name = option_strings[0]
        super().__init__([name, "--no-" + name[2:]], dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        value = not option_string.startswith("--no-")
        if values is not None:
            value = values if value else not values  # argparse applied `type` already
        setattr(namespace, self.dest, value)


def add_knob_args(
    parser: argparse.ArgumentParser | Any,
    knobs: list[Knob],
    *,
    defaults_of: str = "",
    fill_defaults: bool = False,
) -> None:
    """One flag per knob. Absent algorithm knobs stay absent (``argparse.SUPPRESS``), so
    that only what the user typed overrides the config's own defaults; settings fields
    (``fill_defaults``) get their default in the namespace."""
    for k in knobs:
        shown = list(k.default) if isinstance(k.default, tuple) else k.default
        where = f" of {defaults_of}" if defaults_of else ""
        help_text = k.help.replace("``", "").replace("%", "%%")  # argparse formats help
        if "(default" not in help_text:  # unless the help states it (per algorithm)
            help_text = f"{help_text} (default{where}: {shown})".strip()
        if k.required:
            help_text = f"{k.help.replace('``', '').replace('%', '%%')} (required)".strip()
        default = k.default if fill_defaults and not k.required else argparse.SUPPRESS
        kwargs: dict[str, Any] = dict(
            dest=k.name, default=default, help=help_text, type=_parse_value(k)
        )
        if k.type is bool:
            kwargs.update(action=_BoolFlag, metavar="true|false")
        else:
            kwargs["metavar"] = k.flag[2:].upper().replace("-", "_")
        if k.sequence:
            kwargs["nargs"] = "+"
        if k.choices:
            kwargs["choices"] = k.choices
        if k.required:
            kwargs["required"] = True
        parser.add_argument(k.flag, **kwargs)


def given_knobs(args: argparse.Namespace, knobs: list[Knob]) -> dict[str, Any]:
    """The knob values the user typed (sequences as tuples)."""
    out = {}
    for k in knobs:
        if hasattr(args, k.name):
            v = getattr(args, k.name)
            out[k.name] = tuple(v) if isinstance(v, list) else v
    return out


def check_knobs(algo: str, allowed: set[str] | list[Knob], given: dict[str, Any]) -> None:
    """Refuse knobs that ``algo`` does not use, in one line naming them and its knobs."""
    names = {k.name if isinstance(k, Knob) else k for k in allowed}
    unused = [n for n in given if n not in names]
    if unused:
        bad = ", ".join(flag_name(n) for n in unused)
        raise ConfigError(
            f"{bad} {'is not a knob' if len(unused) == 1 else 'are not knobs'} of {algo}; "
            f"its knobs: {', '.join(flag_name(n) for n in sorted(names))}."
        )


def split_knobs(
    fields: set[str] | frozenset[str], knobs: list[Knob], values: dict[str, Any], *, owner: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings fields, knobs by knob name)`` of ``values`` (knobs by name or flag
    spelling, ``clip_param`` or ``clip``); a name that is neither is a one-line error."""
    by_name = {n: k for k in knobs for n in k.names()}
    settings: dict[str, Any] = {}
    chosen: dict[str, Any] = dict(values.get("knobs") or {})
    for key, value in values.items():
        if key in fields:
            settings[key] = value
        elif key in by_name:
            chosen[by_name[key].name] = value
        elif key != "knobs":
            allowed = ", ".join(sorted(set(fields) | {k.name for k in knobs}))
            raise ConfigError(f"{owner} has no setting or knob {key!r}; allowed: {allowed}.")
    return settings, chosen


# ---------------------------------------------------------------- declared value ranges
@dataclass(frozen=True)
class Range:
    """Allowed values of a setting, declared with its type: ``Annotated[int, Range(1)]``.

    Attributes:
        min: smallest allowed value (None: unbounded).
        max: largest allowed value (None: unbounded).
        above: ``min`` itself is not allowed (``> min``).
    """

    min: float | None = None
    max: float | None = None
    above: bool = False

    def ok(self, value: float) -> bool:
        low = self.min is None or (value > self.min if self.above else value >= self.min)
        return low and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.above else '['}{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f"{'>' if self.above else '>='} {self.min:g}"
        return f"<= {self.max:g}"


#: Integers >= 1 (budgets, batch sizes, episodes, steps).
Count = Annotated[int, Range(1)]
#: Integers >= 0 (intervals where 0 means "only at the end", runner counts).
NonNegative = Annotated[int, Range(0)]
#: Alias of :data:`Count` for sizes that are not counts (network widths).
Positive = Count
#: Floats > 0 (learning rates, clip coefficients).
PositiveFloat = Annotated[float, Range(0, above=True)]
#: Floats >= 0 (end learning rates, weight decay, GPU fractions).
NonNegativeFloat = Annotated[float, Range(0)]
#: Floats in [0, 1] (GAE λ, DDIM η).
Probability = Annotated[float, Range(0, 1)]
#: Floats in (0, 1] (discounts).
Discount = Annotated[float, Range(0, 1, above=True)]


def _range_of(hint: Any) -> tuple[Range | None, bool]:
    """``(range, per_element)`` declared in ``hint`` (inside ``| None`` or ``tuple``)."""
    if typing.get_origin(hint) is Annotated:
        found = [m for m in hint.__metadata__ if isinstance(m, Range)]
        return (found[0] if found else None), False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (tuple, list) and args:
        return _range_of(args[0])[0], True
    for arg in args:
        found, per_element = _range_of(arg)
        if found is not None:
            return found, per_element
    return None, False


def check_ranges(settings: Any) -> None:
    """One-line ``ConfigError`` naming the flag of the first field of dataclass
    ``settings`` whose value lies outside its declared :class:`Range` (None passes)."""
    hints = typing.get_type_hints(type(settings), include_extras=True)
    for f in dataclasses.fields(settings):
        declared, per_element = _range_of(hints.get(f.name))
        value = getattr(settings, f.name)
        if declared is None or value is None:
            continue
        values = list(value) if per_element else [value]
        if any(isinstance(v, bool) or not declared.ok(v) for v in values):
            each = "each value of " if per_element else ""
            raise ConfigError(
                f"{each}{flag_name(f.name)} must be {declared.describe()}, got {value!r}."
            )


def set_provided(config: Any, values: dict[str, Any]) -> None:
    """``setattr`` each of ``values`` that is not RLlib's ``NotProvided`` (the body of an
    ``AlgorithmConfig.training()`` override)."""
    from ray.rllib.algorithms.algorithm_config import NotProvided

    for name, value in values.items():
        if value is not NotProvided:
            setattr(config, name, value)
