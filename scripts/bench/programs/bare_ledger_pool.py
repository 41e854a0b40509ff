"""The floor of a Python pool that keeps a crash-safe record: bare_pool.py plus a ledger and a log per task.

Workload 2. Usage: bare_ledger_pool.py FOLDER N AGENTS ARGV...
What bare_pool.py does (fork the agents, pipe each a byte per task, posix_spawn, wait, reply), plus what
any runner that keeps the record wvo-batch keeps must do: a SQLite ledger in WAL mode with the run's and
the tasks' rows, each attempt's row committed (group commit, at most 50 ms late) before its outcome is
reported on an events line, and each task's output in a log file of its own. No scheduling, no
dependencies, no retries, no watchdog, no per-agent pid slots, no terminal.
"""

import json, os, select, shutil, sqlite3, sys, time
folder, n, agents, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
argv[0] = shutil.which(argv[0])
env = dict(os.environ)
os.makedirs(folder + "/logs", exist_ok=True)
db = sqlite3.connect(folder + "/ledger.sqlite", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.executescript("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, started REAL, ended REAL);"
                 "CREATE TABLE IF NOT EXISTS tasks (run INTEGER, task TEXT, PRIMARY KEY (run, task)) WITHOUT ROWID;"
                 "CREATE TABLE IF NOT EXISTS attempts (run INTEGER, task TEXT, agent INTEGER, started REAL, ended REAL, code INTEGER)")
db.execute("BEGIN")
run = db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),)).lastrowid
db.executemany("INSERT INTO tasks VALUES (?, ?)", [(run, f"t{i}") for i in range(n)])
db.execute("COMMIT")
events = open(folder + "/events.jsonl", "a")
def agent(r, w):
    while True:
        i = int.from_bytes(os.read(r, 4), "little")
        if i == 0xFFFFFFFF:
            os._exit(0)
        log = os.open(f"{folder}/logs/t{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        pid = os.posix_spawn(argv[0], argv, env, setsid=True, file_actions=[(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)])
        _, status = os.waitpid(pid, 0)
        os.close(log)
        os.write(w, i.to_bytes(4, "little") + os.waitstatus_to_exitcode(status).to_bytes(4, "little", signed=True))
ends, started, sent, done, pending, since = {}, {}, 0, 0, [], None
def hand_out(fd):
    global sent
    started[fd] = (sent, time.time())
    os.write(ends[fd], sent.to_bytes(4, "little"))
    sent += 1
def flush():
    global pending, since
    db.execute("BEGIN")
    db.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?)", [p[0] for p in pending])
    db.execute("COMMIT")
    events.write("".join(json.dumps(p[1]) + "\n" for p in pending))
    events.flush()
    pending, since = [], None
poll = select.poll()
for a in range(agents):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    if os.fork() == 0:
        agent(r1, w2)
    os.close(r1)
    os.close(w2)
    ends[r2] = w1
    poll.register(r2, select.POLLIN)
    if sent < n:
        hand_out(r2)
while done < n or pending:
    timeout = None if since is None else max(0, int((since + 0.05 - time.monotonic()) * 1000) + 1)
    for fd, _ in poll.poll(timeout):
        data = os.read(fd, 8)
        i, code = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:], "little", signed=True)
        now = time.time()
        pending.append(((run, f"t{i}", fd, started[fd][1], now, code), {"event": "task:finished", "ts": now, "task": f"t{i}", "code": code}))
        since = since or time.monotonic()
        done += 1
        if sent < n:
            hand_out(fd)
    if since is not None and (done == n or time.monotonic() >= since + 0.05):  # the last ones at once
        flush()
for w in ends.values():
    os.write(w, (0xFFFFFFFF).to_bytes(4, "little"))
for _ in ends:
    os.wait()
db.execute("UPDATE runs SET ended = ? WHERE id = ?", (time.time(), run))
db.close()
print(f"{n} succeeded")
