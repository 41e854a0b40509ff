"""wvo-batch: run a YAML roadmap of tasks on a pool of agent processes."""

__version__ = "0.1.0"
