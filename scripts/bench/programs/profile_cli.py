"""The CLI under cProfile: the manager's main thread, and each forked agent into its own file.

Usage: profile_cli.py OUT.prof ROADMAP [wvo-batch options]
"""

import cProfile, os, sys
out = sys.argv[1]
sys.argv = ["wvo-batch", *sys.argv[2:]]
prof = cProfile.Profile()
os.register_at_fork(after_in_child=prof.disable)
import runner.agents.local as local
import runner.cli.command
from runner.cli.command import main

runner.cli.command._exit = sys.exit  # main() ends in os._exit, which would skip dumping the profile

_agent_main = local.agent_main


def profiled_agent(agent_id, *args):
    agent_prof = cProfile.Profile()
    agent_prof.enable()
    try:
        _agent_main(agent_id, *args)
    finally:
        agent_prof.disable()
        agent_prof.dump_stats(f"{out}.{agent_id}")


local.agent_main = profiled_agent
prof.enable()
try:
    main()
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
