"""Cost of an attempt from an executor's `prices:` table, for a CLI that reports tokens but no cost.

    prices:                       # USD per million tokens, per model ({model} as the models table gives it)
      gpt-5-codex: {input: 1.25, cached_input: 0.125, output: 10}
      default: {input: 2, output: 8}   # any model not listed; cached_input defaults to input

cost = (input − cached) × input + cached × cached_input + output × output, over 1,000,000. Reasoning
tokens are output tokens (they are counted inside `output`). A cost worked out here is marked estimated;
a cost the CLI reported (claude's `total_cost_usd`) is kept as it is (see output.attempt_cost for
a resumed session's).
"""

from __future__ import annotations

import math
from dataclasses import replace

from runner.coding.output import CliResult, Usage
from runner.errors import UsageError
from runner.model import record

_FIELDS = ("input", "cached_input", "output")
DEFAULT = "default"


class PricingError(UsageError, ValueError):
    """A malformed `prices:` table; the message is one line that names the field."""


@record(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    cached_input: float
    output: float


def parse_prices(spec, where: str = "executor.prices") -> dict[str, Price]:
    """Validate a `prices:` table: model -> {input, cached_input?, output}. Raises PricingError."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise PricingError(f"{where}: must be a mapping of model -> {{input, cached_input, output}} (USD per "
                           f"million tokens); got {type(spec).__name__}")
    table = {}
    for model, entry in spec.items():
        if not isinstance(model, str) or not model.strip():
            raise PricingError(f"{where}: a model name must be a non-empty string; got {model!r}")
        here = f"{where}.{model}"
        if not isinstance(entry, dict):
            raise PricingError(f"{here}: must be a mapping with input, output (and cached_input); got {entry!r}")
        unknown = [str(k) for k in entry if k not in _FIELDS]
        if unknown:
            raise PricingError(f"{here}: unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        for name in ("input", "output"):
            if name not in entry:
                raise PricingError(f"{here}.{name}: missing (USD per million tokens)")
        values = {name: _rate(entry[name], f"{here}.{name}") for name in entry}
        values.setdefault("cached_input", values["input"])
        table[model] = Price(**values)
    return table


def _rate(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PricingError(f"{where}: must be a number of USD per million tokens, 0 or more; got {value!r}")
    return float(value)


def price_for(prices: dict[str, Price], model: str | None) -> Price | None:
    """The model's entry, else `default`; None when neither is there."""
    return prices.get(model or "") or prices.get(DEFAULT)


def cost(usage: Usage, price: Price) -> float:
    """USD for these tokens at this price."""
    cached = min(usage.cached, usage.input)
    return ((usage.input - cached) * price.input + cached * price.cached_input + usage.output * price.output) / 1e6


def with_cost(result: CliResult, usage: Usage, model: str | None, prices: dict[str, Price]) -> CliResult:
    """result with a cost: the CLI's own if it reported one, else estimated from usage (the attempt's
    tokens, see output.attempt_usage) and the table; unchanged when the table has no price for the model."""
    if result.cost_usd is not None:
        return result
    price = price_for(prices, model or result.model)
    if price is None:
        return result
    return replace(result, cost_usd=cost(usage, price), cost_estimated=True)
