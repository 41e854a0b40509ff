"""Agents: the processes that run attempts, and the backends that start them.

`agent.agent_main` is a forked agent's loop; `execute.run_attempt` runs one attempt of a task (a
command, an argv, a callable), streams its output to the log and kills its whole tree on timeout or
cancel; `channel` carries the `messages` (small frozen dataclasses) between agent and manager;
`backend` is the interface the manager sees (AgentGone, AgentReady), `local` forks agents on this
machine and `ray_backend` runs them as Ray actors (the actor itself is `ray_actor`). `watchdog`
kills what a run started when its manager dies; `outbox` keeps a chunk's results until reported.

`pipeline` is one attempt as every backend runs it: a worktree of its own, the command or agent CLI
with its output parser, the commit, the checks (`checks`: the one check runner, also the landing's re-check on
the merged result), and the kill of all it left running (`kill`: the one process-tree kill); `sessions` carries a claude session into the folder of the attempt that
resumes it; `worktree_setup` makes a fresh worktree ready first (`workspace.copy`, then `workspace.setup`).

May import: `runner.model`, `runner.errors`, `runner.coding` (the git layer, output parsers, which run in
the agent), and nothing of the manager, the roadmap or the CLI.
Never prints (a task's output goes to its log). Imported by: `runner.manager` (through the backend).
"""
