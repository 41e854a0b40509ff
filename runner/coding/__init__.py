"""What is specific to coding-agent CLIs (codex, claude, and custom ones).

`executors`: the argv and prompt templates, the presets, the models table and rate-limit patterns
that turn a task without `command` into an agent-CLI invocation.

May import: `runner.model` and `runner.errors`; nothing of the manager, the agents or the CLI.
Imported by: `runner.roadmap` (an `executor:` is parsed at load time), `runner.manager`.
"""
