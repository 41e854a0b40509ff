"""The floor of any runner that starts each task as a process: N `posix_spawn`s split evenly over K processes.

No pipe, no scheduling, no bookkeeping of any kind: each of the K processes spawns its share of the command
one after another and waits for each (workload 1). What is left is the cost of the commands themselves
(fork/exec, the dynamic loader, libc's start and exit) on this machine's cores.
Usage: spawn_only.py N K ARGV...
"""

import os, shutil, sys
n, k, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
argv[0] = shutil.which(argv[0])
env = dict(os.environ)
pids = []
for i in range(k):
    pid = os.fork()
    if pid == 0:
        for _ in range(n // k + (i < n % k)):
            os.waitpid(os.posix_spawn(argv[0], argv, env, setsid=True), 0)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
