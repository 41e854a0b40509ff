"""`python scripts/bench [options]`: the benchmark (see bench/__init__.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, so that `bench` is this package

from bench.cli import main  # noqa: E402

sys.exit(main())
