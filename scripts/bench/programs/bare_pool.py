"""The floor of a Python pool: fork the agents, pipe each a byte per task, posix_spawn, wait, reply.

No imports beyond the interpreter's own, no ledger, no log files, no scheduling (workload 2).
Usage: bare_pool.py N AGENTS ARGV...
"""

import os, select, shutil, sys
n, agents, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
argv[0] = shutil.which(argv[0])
env = dict(os.environ)
def agent(r, w):
    while os.read(r, 1) == b"t":
        pid = os.posix_spawn(argv[0], argv, env, setsid=True)
        os.waitpid(pid, 0)
        os.write(w, b"d")
    os._exit(0)
ends, sent, done = {}, 0, 0
for _ in range(agents):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    if os.fork() == 0:
        agent(r1, w2)
    ends[r2] = w1
poll = select.poll()
for r, w in ends.items():
    poll.register(r, select.POLLIN)
    if sent < n:
        os.write(w, b"t")
        sent += 1
while done < n:
    for fd, _ in poll.poll():
        os.read(fd, 1)
        done += 1
        if sent < n:
            os.write(ends[fd], b"t")
            sent += 1
for w in ends.values():
    os.write(w, b"q")
for _ in ends:
    os.wait()
