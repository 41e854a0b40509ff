"""The floor of a Python runner for one task: the interpreter, one ledger row in SQLite, one posix_spawn.

Workload 3. Usage: bare_runner.py LEDGER ARGV...
Opens (or creates) the ledger, records the task as started, spawns it, waits, records its exit code and
commits: what any runner that keeps a crash-safe record of one task must do, and nothing else.
"""

import os, shutil, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS attempts (task TEXT, started REAL, ended REAL, code INTEGER)")
argv = sys.argv[2:]
argv[0] = shutil.which(argv[0])
db.execute("BEGIN")
cur = db.execute("INSERT INTO attempts (task, started) VALUES (?, ?)", ("t0", time.time()))
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status = os.waitpid(pid, 0)
db.execute("UPDATE attempts SET ended = ?, code = ? WHERE rowid = ?", (time.time(), os.waitstatus_to_exitcode(status), cur.lastrowid))
db.execute("COMMIT")
db.close()
