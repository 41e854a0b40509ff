"""The floor of workload 4: a bare fork pool of callables that keeps wvo-batch's record of each call.

What wvo-batch must do for every callable, and nothing else: read the roadmap (a line scan, not a
YAML reader), fork the agents, hand out chunks of calls over pipes (pickled), call the function with
stdout and stderr redirected once per chunk, send the chunk's results back, and record each call as
one ledger row (SQLite in WAL mode, one COMMIT per 50 ms) and four JSON events (queued, reserved,
started, finished) in events.jsonl. No scheduler, no components, no summary, no per-task environment
or log file, no outbox, no task hashes: a lower bound, not a rival.

Usage: bare_callables.py ROADMAP STATE_DIR [AGENTS [CHUNK]]
"""

import importlib, json, os, pickle, select, sqlite3, struct, sys, time

roadmap, state = sys.argv[1], sys.argv[2]
agents = int(sys.argv[3]) if len(sys.argv) > 3 else 2
chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 256
tasks = []
call = None
with open(roadmap, encoding="utf-8") as f:
    for line in f:
        s = line.strip()
        if s.startswith("- id:"):
            tasks.append([s[5:].strip(), None])
        elif s.startswith("call:"):
            tasks[-1][1] = s[5:].strip().strip('"')
os.makedirs(state, exist_ok=True)
db = sqlite3.connect(os.path.join(state, "ledger.sqlite"), isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS attempts (task TEXT, attempt INT, agent TEXT, start REAL, end REAL, exit_code INT, outcome TEXT, log TEXT, error TEXT, value TEXT)")
events = open(os.path.join(state, "events.jsonl"), "a", encoding="utf-8", buffering=1 << 16)
HEADER = struct.Struct("!Q")


def send(fd, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def recv(fd):
    def read(n):
        buf = b""
        while len(buf) < n:
            part = os.read(fd, n - len(buf))
            if not part:
                raise EOFError
            buf += part
        return buf
    (size,) = HEADER.unpack(read(HEADER.size))
    return pickle.loads(read(size))


def agent(r, w):
    functions = {}
    while True:
        batch = recv(r)
        if batch is None:
            os._exit(0)
        saved = os.dup(1), os.dup(2)
        log = os.open(os.devnull, os.O_WRONLY)
        os.dup2(log, 1)
        os.dup2(log, 2)
        results = []
        for task_id, fn in batch:
            start = time.time()
            func = functions.get(fn)
            if func is None:
                module, _, name = fn.partition(":")
                func = functions[fn] = getattr(importlib.import_module(module), name)
            value = func()
            results.append((task_id, 1, "succeeded", 0, start, time.time(), value))
        for fd, s in zip((1, 2), saved):
            os.dup2(s, fd)
            os.close(s)
        os.close(log)
        send(w, results)


ends = {}
for i in range(agents):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    if os.fork() == 0:
        agent(r1, w2)
    ends[r2] = (w1, f"worker-{i}")
queue = list(reversed(tasks))
poll = select.poll()
rows, lines, oldest, done = [], [], None, 0
now = time.time()
lines.extend(json.dumps({"ts": now, "event": "task:queued", "task": t[0], "priority": "normal"}) for t in tasks)


def hand_out(w):
    batch = [queue.pop() for _ in range(min(chunk, len(queue)))]
    if batch:
        send(w, batch)
        lines.append(json.dumps({"ts": time.time(), "event": "task:reserved", "task": batch[0][0], "chunk": len(batch)}))
    return bool(batch)


def commit():
    db.execute("BEGIN")
    db.executemany("INSERT INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    db.execute("COMMIT")
    events.write("\n".join(lines) + "\n")
    events.flush()
    rows.clear()
    lines.clear()


busy = 0
for r, (w, _) in ends.items():
    poll.register(r, select.POLLIN)
    busy += hand_out(w)
while busy:
    for fd, _ in poll.poll(50):
        w, agent_id = ends[fd]
        results = recv(fd)
        busy -= 1
        for task_id, attempt, outcome, code, start, end, value in results:
            rows.append((task_id, attempt, agent_id, start, end, code, outcome, None, None, value))
            lines.append(json.dumps({"ts": start, "event": "task:reserved", "task": task_id, "agent": agent_id, "attempt": attempt}))
            lines.append(json.dumps({"ts": start, "event": "task:started", "task": task_id, "agent": agent_id, "attempt": attempt}))
            lines.append(json.dumps({"ts": end, "event": "task:finished", "task": task_id, "agent": agent_id, "attempt": attempt,
                                     "status": outcome, "exit_code": code, "duration_s": round(end - start, 6)}))
        done += len(results)
        if oldest is None:
            oldest = time.monotonic()
        busy += hand_out(w)
    if oldest is not None and (time.monotonic() - oldest >= 0.05 or not busy):
        commit()
        oldest = None
for w, _ in ends.values():
    send(w, None)
for _ in ends:
    os.wait()
commit()
db.close()
events.close()
assert done == len(tasks), (done, len(tasks))
