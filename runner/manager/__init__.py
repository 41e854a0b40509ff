"""The manager process: the run loop and all state shared between agents.

`run.Run` owns the agent table and the reservation dict (`pool`), decides with the pure `scheduler`
(ready set, priorities, routing, affinity, retries), records every outcome in the SQLite `ledger`
before it reports it, writes `telemetry` events, hands quick tasks out in chunks (`quick`), keeps the
state dir and its lock (`statedir`), and loops batches of a roadmap (`autopilot`).

May import: `runner.model`, `runner.errors`, `runner.roadmap`, `runner.coding`, and the agents only
through the backend interface (`runner.agents.backend`, the `messages` on the channel, and a backend
class chosen by name). Never prints: it reports through a `Reporter`. Imported by: `runner.cli`.
"""
