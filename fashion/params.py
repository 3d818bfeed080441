"""What each key of params.yaml means and which values it accepts.

params.yaml holds the values (the tutorial's hyperparameters by default); this module holds the
rules. Every stage that reads params validates the whole file before doing any work, then reads
only its own keys.
"""

import difflib
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

from fashion.errors import ParamsError


@dataclass(frozen=True)
class Rule:
    kind: type
    allowed: str
    check: Callable[[Any], bool]
    help: str


DEVICES = ("auto", "cpu", "cuda")
FLOAT32_MAX = float(np.finfo(np.float32).max)
COUNT = "an integer from 1 to 2**63 - 1"  # a count that PyTorch's int64 holds


def _count(value: int) -> bool:
    return 1 <= value < 2**63


RULES: dict[str, Rule] = {
    "seed": Rule(int, "an integer from 0 to 2**63 - 1", lambda v: 0 <= v < 2**63,
                 "seeds every random draw: initial weights, batch order, embedding sample"),
    # The update multiplies float32 tensors by lr, which fails for an lr beyond float32's range.
    "lr": Rule(float, "a number > 0 that float32 holds (up to about 3.4e+38)",
               lambda v: 0 < v <= FLOAT32_MAX, "SGD learning rate"),
    "momentum": Rule(float, "a number in [0, 1)", lambda v: 0 <= v < 1, "SGD momentum"),
    "batch_size": Rule(int, COUNT, _count, "training mini-batch size"),
    "epochs": Rule(int, COUNT, _count, "passes over the training set"),
    "log_every": Rule(int, COUNT, _count,
                      "training images between TensorBoard loss points and prediction figures "
                      "(the x axis counts images, so batch sizes compare; the run's end is "
                      "logged too)"),
    "embedding_samples": Rule(int, COUNT, _count, "training images shown in the embedding projector, "
                              "at most the training-set size"),
    "device": Rule(str, "one of " + ", ".join(DEVICES), lambda v: v in DEVICES,
                   "auto picks CUDA when PyTorch sees a GPU, else the CPU"),
}

# What other code calls some of these keys; too unlike ours for difflib to suggest.
SYNONYMS = {"learning_rate": "lr", "learning-rate": "lr", "num_epochs": "epochs",
            "n_epochs": "epochs", "random_seed": "seed", "bs": "batch_size"}


def epilog(keys: tuple[str, ...]) -> str:
    """A stage's --help text on the keys it reads: its params in dvc.yaml."""
    width = max(len(key) for key in keys) + 4
    rows = [textwrap.fill(f"{RULES[key].help}; {RULES[key].allowed}", 79,
                          initial_indent=f"  {key:<{width - 2}}", subsequent_indent=" " * width)
            for key in keys]
    return "\b\nReads these keys of the params file:\n" + "\n".join(rows)  # \b: click keeps the lines


def _shown(value: Any) -> str:
    """A value as the error shows it: whole up to a line's worth, else its start."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def _refuse_structure(yaml: YAML, text: str, source: str) -> None:
    """Refuse anchors, aliases and nested collections from the parser's events, before any value
    is built: nested aliases expand exponentially, and deep nesting overflows the composer's
    recursion. Params are a flat mapping of single values, which needs neither."""
    depth = 0
    for event in yaml.parse(text):
        line = f"{source}, line {event.start_mark.line + 1}"
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise ParamsError(f"{line}: YAML anchors and aliases (& and *) are not accepted; "
                              "params are flat `key: value` lines, so write each value out")
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > 2:  # a list or mapping as a value is left to validate's message
                raise ParamsError(f"{line}: a list or mapping nested in a value; params are flat "
                                  "`key: value` lines of single values")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _typed(key: str, value: Any) -> Any:
    kind = RULES[key].kind
    # YAML booleans are ints to Python; a float-valued key accepts an integer such as `lr: 1`.
    if isinstance(value, bool):
        return None
    if kind is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond a double's range
            return None
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        return None  # YAML's .inf and .nan: no setting means them
    return value if isinstance(value, kind) else None


def validate(values: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Check every key and value; return them with float keys as floats."""
    if not isinstance(values, dict):
        raise ParamsError(f"{source} must be a mapping of keys to values, such as `lr: 0.001`")
    checked = {}
    for key, value in values.items():
        if key not in RULES:
            near = [SYNONYMS[key]] if key in SYNONYMS else difflib.get_close_matches(
                str(key), RULES, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ParamsError(f"{source}: unknown key {_shown(key)}; {hint}known keys: "
                              f"{', '.join(RULES)}")
        rule = RULES[key]
        typed = _typed(key, value)
        if typed is None or not rule.check(typed):
            raise ParamsError(f"{source}: {key} must be {rule.allowed}, got {_shown(value)}")
        checked[key] = typed
    return checked


def write(path: str | Path, values: dict[str, Any]) -> None:
    """A flat params file of `values`, one `key: value` line each (for benchmarks and tests)."""
    Path(path).write_text("".join(f"{key}: {value}\n" for key, value in values.items()))


def load(path: str | Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Validate the whole params file, then return the keys a stage reads."""
    path = Path(path)
    try:
        # ruamel.yaml is the parser DVC uses, so `lr: 1e-3` is a float to both (PyYAML reads a string).
        yaml, text = YAML(typ="safe", pure=True), path.read_text()
        _refuse_structure(yaml, text, str(path))
        values = yaml.load(text)
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the repository root or pass --params") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except MarkedYAMLError as exc:  # the parser's one useful line, without its source excerpt
        line = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        context = f"{exc.context}, " if exc.context else ""
        raise ParamsError(f"{path} is not valid YAML ({line}{context}{exc.problem}); "
                          "fix it there") from None
    except YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    checked = validate(values, str(path))
    missing = [key for key in keys if key not in checked]
    if missing:
        needs = "; ".join(f"{key} ({RULES[key].allowed})" for key in missing)
        raise ParamsError(f"{path} lacks {needs}")
    return {key: checked[key] for key in keys}
