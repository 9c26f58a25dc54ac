"""Strict checks of user-facing arguments and config values, each error naming what it checks.

Booleans are strict: only ``True`` / ``False`` (Python or NumPy bools) are accepted. A string such as
``"False"`` is refused rather than parsed, because ``papermill -r FORCE_RUN False`` passes the
string ``"False"``, which Python would treat as true; pass ``-p FORCE_RUN False`` (a YAML bool).
Integers are non-bool integers (NumPy integers too); reals are finite non-bool numbers.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_bool", "check_int", "check_real", "check_seed", "check_seeds", "check_choice"]


def check_bool(value, name: str) -> bool:
    """``value`` as a bool if it is one (Python or NumPy); a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    hint = ""
    if isinstance(value, str):
        hint = (" (a string is not parsed: with papermill pass `-p NAME True` or `-p NAME False`, "
                "not `-r`, which passes strings)")
    raise ValueError(f"{name} must be True or False (a bool), got {value!r} "
                     f"of type {type(value).__name__}{hint}")


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A non-bool integer within [minimum, maximum] (either bound optional), as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name} must be an integer {' and '.join(p for p in (lo, hi) if p)}, got {value!r}")
    return int(value)


def check_real(value, name: str, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite non-bool real number in the interval given by ``low``/``high`` (closed unless
    ``low_open``/``high_open``), as a Python float."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (lo or hi) else ""
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return float(value)


def check_seed(value, name: str = "seed") -> int:
    """A seed: a non-bool integer >= 0."""
    return check_int(value, name, 0)


def check_seeds(values, name: str = "seeds") -> list[int]:
    """A non-empty list/tuple of seeds (non-bool integers >= 0), without repeats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of integers >= 0, got {values!r}")
    seeds = [check_seed(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name} must not repeat a seed, got {values!r}")
    return seeds


def check_choice(value, name: str, choices) -> object:
    """``value`` if it is one of ``choices``; else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
