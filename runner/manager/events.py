"""The names of the events a run emits (events.jsonl, --events, the display, the report).

One place, so the manager, the terminal display, the timeline, the report and the tests spell each
name the same way. The strings are the public format: never change one.
"""

from __future__ import annotations

RUN_STARTED = "run:started"
RUN_FINISHED = "run:finished"

AGENT_SPAWNED = "agent:spawned"
AGENT_EXITED = "agent:exited"
AGENT_COOLDOWN = "agent:cooldown"  # rate limited: the agent backs off
AGENT_SCALED = "agent:scaled"  # --min-agents/--max-agents added or retired one
AGENT_HUNG = "agent:hung"  # stopped (SIGSTOP) holding a task: killed

ACCOUNT_PAUSED = "account:paused"  # an agent CLI's usage limit
ACCOUNT_RESUMED = "account:resumed"

TASK_QUEUED = "task:queued"
TASK_SKIPPED = "task:skipped"
TASK_RESERVED = "task:reserved"
TASK_STARTED = "task:started"
TASK_FINISHED = "task:finished"
TASK_RETRY = "task:retry"
TASK_RETURNED = "task:returned"  # a chunk's head given back, unstarted
TASK_USAGE = "task:usage"  # an agent-CLI attempt's tokens and cost
TASK_REVIEWED = "task:reviewed"
TASK_LANDING = "task:landing"
TASK_LANDED = "task:landed"
TASK_NOT_LANDED = "task:not_landed"
TASK_ADDED = "task:added"  # the live roadmap: a task joined the run
TASK_CHANGED = "task:changed"
TASK_REMOVED = "task:removed"
TASK_REFUSED = "task:refused"  # the live roadmap: an added or changed task that cannot run in this run (reason)

CHUNK_RETURNED = "chunk:returned"

ROADMAP_READ = "roadmap:read"
ROADMAP_INVALID = "roadmap:invalid"

STATUS_UPDATED = "status:updated"
QUEUE_UPDATED = "queue:updated"
