"""calc: a small calculator library (the fleet demo's project)."""

from calc.ops import add, sub

__version__ = "0.1.0"
