"""What is specific to coding-agent CLIs (codex, claude, and custom ones).

`executors`: the argv and prompt templates, the presets, the models table and rate-limit patterns
that turn a task without `command` into an agent-CLI invocation.

`settings`: the `workspace:`, `files:`, `checks:` and `allow_empty:` settings, as written -> typed.
`workspace` and `landing`: git worktrees per attempt, and the serialised landing on `into`.

May import: `runner.model` and `runner.errors`; nothing of the manager, the agents or the CLI.
Imported by: `runner.roadmap` (settings are checked at load time), `runner.agents` (an attempt's
worktree, output parsers), `runner.manager` (landing).
"""
