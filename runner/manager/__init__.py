"""The manager process: the run loop and all state shared between agents.

`run` is the loop: it owns the agent table and the reservation dict (`pool`), decides with the pure
`scheduler` (ready set, priorities, routing, affinity, retries; `roadmap_edits`), and records every
outcome in the SQLite `ledger` before it reports it (`outcomes`, `telemetry`, `events`); how the run
ended becomes one exit code in `exits`. Every feature plugs into the loop as a component
(`components`, sharing `context`): `chunks` (+ `chunk_sizes`), `accounts`, `review_rounds`,
`landing_queue`, `live`, `hung_agents`, `scaling`, `board`. `options` is what a run is given,
`statedir` its state dir and lock, `stopping` its signals, `autopilot` the loop of batches.

May import: `runner.model`, `runner.errors`, `runner.roadmap`, `runner.coding`, and the agents only
through the backend interface (`runner.agents.backend`, the `messages` on the channel, and a backend
class chosen by name). Never prints: it reports through a `Reporter`. Imported by: `runner.cli`.
"""
