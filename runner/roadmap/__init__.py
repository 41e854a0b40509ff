"""The roadmap: YAML in, a validated `Roadmap` of `Task`s out, and what is written back to the file.

Reading (`yamlread` picks the line-based `yamlfast` reader, with `yamlscalar` for what plain scalars
mean, or the libyaml fallback `yamllib`; both build the `yamldoc.Doc` of values with their line numbers), building tasks (`build` walks the files and
their layouts, `buildtask` reads one task, `fields` checks single values), the dependency graph and
cycle checks (`graph`), problems and `--check` (`check`, `plan`), batch selection (`selection`), the
JSON Schema (`schema`), and `--write-back` (`writeback`). `loader.load` is the entry.

May import: `runner.model`, `runner.errors`, and `runner.coding.executors` (an `executor:` is parsed at
load time). Knows nothing of processes, the ledger or the terminal. Imported by: `runner.manager`
(tasks to run, write-back) and `runner.cli`.
"""
