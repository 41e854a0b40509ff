"""Red team: what a run touches, shows and leaks, through the real `wvo-batch` command.

The caller's git variables reach no kind of task (a `call:` included, on both backends), and a call runs
in its own cwd; the state dir refuses what was planted at its paths, never following it; every file and
folder of a run is private whatever the umask, and the report and trace follow it; the HTML report
carries no raw control character; and what a task can reach in its run folder (its logs, the board's
key, the branch journal, the worktree lock) never makes wvo-batch write elsewhere, hang or stop.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from conftest import ROOT, wvo
from helpers import Fifo, reaped
from test_worktrees import GIT_ENV, WORKTREE, checkout_state, git, make_repo

from runner.coding.gitenv import points_at_repository

pytestmark = pytest.mark.timeout(120)


# -- the caller's git variables -------------------------------------------------------------------------


def hook_environment(repo: Path) -> dict[str, str]:
    """What `git commit` gives a hook, and what a user's `git -c` adds (all pointing at their repository),
    and a ceiling of the caller's."""
    dot_git = repo / ".git"
    return {
        "GIT_DIR": str(dot_git), "GIT_WORK_TREE": str(repo), "GIT_INDEX_FILE": str(dot_git / "index"),
        "GIT_OBJECT_DIRECTORY": str(dot_git / "objects"), "GIT_PREFIX": "",
        "GIT_CONFIG_PARAMETERS": "'core.hookspath'='/nonexistent'",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Someone Else",
        "GIT_CEILING_DIRECTORIES": "/nonexistent-ceiling",
    }


def test_no_kind_of_task_started_from_a_git_hook_sees_the_users_repository(tmp_path):
    """A shell command, an argv command, a Python `call:`, a `checks:` command and a worktree task each
    dump their environment, stage a file and commit: none may see a variable that points git at the
    user's repository, and the user's index, HEAD, status and main branch stay as they were."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def stage_and_dump(kind: str) -> str:
        return (f"env -0 > {scratch}/{kind}.env; echo {kind} > {kind}.txt; git add {kind}.txt;"
                f" git commit -q --allow-empty -m {kind}; true")

    shared = "    workspace: {mode: shared}\n" + f"    cwd: {json.dumps(str(scratch))}\n"
    roadmap = WORKTREE + "tasks:\n" + "".join([
        f"  - id: worktree\n    command: {json.dumps(stage_and_dump('worktree'))}\n",
        f"  - id: shell\n{shared}    command: {json.dumps(stage_and_dump('shell'))}\n"
        f"    checks: [{json.dumps(stage_and_dump('check'))}]\n",
        f"  - id: argv\n{shared}    command: {json.dumps(['/bin/sh', '-c', stage_and_dump('argv')])}\n",
        f"  - id: call\n{shared}    call: subprocess:run\n"
        f"    args: [{json.dumps(['/bin/sh', '-c', stage_and_dump('call')])}]\n",
    ])
    run_from_a_hook(make_repo(tmp_path, roadmap), tmp_path, scratch, "--agents", "4", timeout=90)
    for kind in ("worktree", "shell", "check", "argv", "call"):
        env = dict(v.split("=", 1) for v in (scratch / f"{kind}.env").read_text().split("\0") if v)
        leaked = sorted(k for k in env if points_at_repository(k))
        if kind == "worktree":  # the run's one config entry (its ref guard's hooks folder), not the caller's user.name
            assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"]) == ("1", "core.hooksPath")
            assert env["GIT_CONFIG_VALUE_0"].endswith("/ws/hooks")
            leaked = [k for k in leaked if k not in ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0")]
        assert not leaked, f"the {kind} task saw {leaked}"
        if kind == "worktree":  # pinned to the worktree's parent; a shared task keeps the caller's (docs/workspaces.md)
            assert env["GIT_CEILING_DIRECTORIES"] != "/nonexistent-ceiling"


def run_from_a_hook(repo: Path, tmp_path: Path, scratch: Path, *args: str, timeout: float) -> None:
    """Run the repository's roadmap from `scratch` with a git hook's environment: it succeeds, and the user's
    branch and checkout (index included) are as they were."""
    before = checkout_state(repo)
    r = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "-q", *args,
            env=hook_environment(repo), cwd=scratch, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["initial"]
    assert checkout_state(repo) == before, "a task staged in the user's index"


@pytest.mark.ray
def test_no_task_on_a_ray_agent_started_from_a_git_hook_sees_the_users_repository(tmp_path):
    """On Ray a task's environment is built from its node's, and a `call:` runs inside the actor, whose
    environment is the node's: a run's own local Ray instance inherits the hook's variables from the
    wvo-batch process. A worktree task stages a file (it must land on its branch, not in the user's index),
    a shared command checks it has no GIT_INDEX_FILE, and a call dumps its environment and commits. One
    run (one Ray start-up) for the three, formerly two tests (this one and test_sealed's)."""
    pytest.importorskip("ray")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = f"env -0 > {scratch}/call.env; echo x > x.txt; git add x.txt; git commit -q --allow-empty -m call; true"
    roadmap = WORKTREE + ("tasks:\n  - id: t\n    command: \"echo mine > f.txt && git add f.txt\"\n"
                          "  - id: plain\n    workspace: {mode: shared}\n    command: 'test -z \"$GIT_INDEX_FILE\"'\n"
                          "  - id: call\n    workspace: {mode: shared}\n" + f"    cwd: {json.dumps(str(scratch))}\n"
                          "    call: subprocess:run\n" + f"    args: [{json.dumps(['/bin/sh', '-c', script])}]\n")
    repo = make_repo(tmp_path, roadmap)
    run_from_a_hook(repo, tmp_path, scratch, "--backend", "ray", "--agents", "2", timeout=120)
    assert git(repo, "show", "wvo/roadmap:f.txt") == "mine\n"
    env = dict(v.split("=", 1) for v in (scratch / "call.env").read_text().split("\0") if v)
    assert not sorted(k for k in env if points_at_repository(k))

# -- control characters in the HTML report ----------------------------------------------------------------

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_the_html_report_carries_no_raw_control_character_from_a_roadmap_or_a_task(tmp_path):
    """Ids, titles and a task's error, with ESC/OSC/CSI sequences, BEL, NUL, \\r and a bidi override: the
    report spells each one out, as the terminal does (a `cat` or a pager of the page must not run them,
    and an override must not reorder what a reader sees), and still escapes HTML everywhere."""
    roadmap = tmp_path / "roadmap.yaml"
    roadmap.write_text(
        "tasks:\n"
        '  - id: "a\\e]0;PWNED\\a"\n'
        '    title: "T\\e[2J\\r\\0x\\u202eevil</td><script>alert(1)</script>"\n'
        "    command: \"printf 'out\\\\033[5m\\\\n'; exit 3\"\n"
        '  - id: "b\\u009b2J\\"><img src=x>"\n'
        "    call: builtins:exec\n"
        "    args: [\"raise ValueError('bad\\\\x1b]52;c;eA==\\\\x07\\\\u202e')\"]\n"
    )
    report = tmp_path / "report.html"
    r = wvo(roadmap, "--state-dir", tmp_path / "state", "--report", report, "-q")
    assert r.returncode == 1, r.stderr
    text = report.read_text(encoding="utf-8", errors="surrogateescape")
    raw = sorted({m.group() for m in RAW_CONTROL.finditer(text)} - {"\n", "\t"})
    assert not raw, f"raw control characters in the report: {raw}"
    assert "a\\x1b]0;PWNED\\x07" in text and "\\u202eevil" in text and "b\\x9b2J" in text
    assert "bad\\x1b]52;c;eA==\\x07" in text  # the call's error, as the attempt's bar says it
    assert "<script>alert" not in text and "<img src=x" not in text and text.count("<script>") == 1


# -- what was planted at the state dir's paths ------------------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def lock_name(rm: Path) -> str:
    from runner.manager.statedir import RunLock

    return os.path.basename(next(iter(RunLock.of_roadmaps("", [str(rm)]).paths)))


def plant(path: Path, kind: str, outside: Path) -> None:
    if kind == "symlink":  # to a file of ours outside the state dir, which must stay as it is
        (outside / "target").write_text("keep\n")
        os.chmod(outside / "target", 0o600)
        path.symlink_to(outside / "target")
    elif kind == "dir-symlink":
        (outside / "target").mkdir(mode=0o700)
        path.symlink_to(outside / "target")
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "dir":
        path.mkdir(mode=0o700)
    elif kind == "file":
        path.write_text("x\n")
        os.chmod(path, 0o600)
    elif kind == "theirs":
        path.write_text("x\n")
        os.chown(path, 65534, -1)
    elif kind == "their-dir":
        path.mkdir(mode=0o700)
        os.chown(path, 65534, -1)


def planted(name: str, kind: str):
    return pytest.param(name, kind, marks=[as_root] if kind.startswith("their") else [], id=f"{name}-{kind}")


PLANTS = [
    planted(name, kind)
    for name in ("<lock>", "ledger.sqlite-wal", "ledger.sqlite-shm", "ledger.sqlite-journal")
    for kind in ("symlink", "fifo", "dir", "theirs")
] + [planted("runs", kind) for kind in ("dir-symlink", "symlink", "fifo", "file", "their-dir")] + [
    planted("latest", kind) for kind in ("dir", "fifo", "file")
]


@pytest.mark.parametrize("name, kind", PLANTS)
def test_a_path_planted_in_the_state_dir_is_refused_naming_it_and_never_followed(tmp_path, name, kind):
    marker = tmp_path / "ran"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: a\n    command: touch {marker}\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    path = state / (lock_name(rm) if name == "<lock>" else name)
    plant(path, kind, outside)
    planted = os.lstat(path)
    r = wvo(rm, "--state-dir", state, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists(), "a task ran"
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_uid) == (planted.st_ino, planted.st_mode, planted.st_uid)
    if kind == "symlink":
        assert (outside / "target").read_text() == "keep\n"
    if kind == "dir-symlink":
        assert os.listdir(outside / "target") == []
    if name == "<lock>":  # --status reads the lock too: it must not hang on a FIFO nor follow a link
        s = wvo(rm, "--state-dir", state, "--status", timeout=30)
        assert s.returncode in (2, 3) and "Traceback" not in s.stderr, s.stderr


def test_a_runs_folder_others_could_read_is_made_private(tmp_path):
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: 'true'\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "runs").mkdir()
    os.chmod(state / "runs", 0o755)
    r = wvo(rm, "--state-dir", state, "-q")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(state / "runs").st_mode) == 0o700


# -- modes under a permissive umask -------------------------------------------------------------------------


def modes_under(state: Path, skip_inside: tuple[str, ...] = ()) -> dict[str, tuple[int, bool]]:
    """Every path under the state dir (symlinks left out): its mode, and whether it is a folder; the contents of folders whose
    relative path matches `skip_inside` (a worktree's files are the project's, made by git and the task)."""
    out = {}
    for where, dirs, files in os.walk(state):
        rel = os.path.relpath(where, state)
        if any(re.fullmatch(p, rel) for p in skip_inside):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(where, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                out[os.path.relpath(path, state)] = stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)
    return out


def not_private(modes: dict[str, tuple[int, bool]]) -> dict[str, str]:
    bad = {}
    for rel, (mode, is_dir) in modes.items():
        if mode != (0o700 if is_dir else 0o600):
            bad[rel] = f"{mode:04o}"
    return bad


WORKTREES = (r"runs/[^/]+/ws/worktrees/[^/]+", r"runs/[^/]+/ws/landing", r"runs/[^/]+/ws/merge-[^/]+/tree")


def test_every_file_and_folder_a_run_makes_is_private_under_umask_000(tmp_path):
    """ledger and its -wal/-shm, run folders, logs, events, board key and socket, lock files, the
    worktrees' folder, the fence and the landing tree: 0700 folders and 0600 files, with umask 000,
    looked at while the run is live and after it."""
    ready = Fifo(tmp_path / "ready")
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    roadmap = WORKTREE + (
        "tasks:\n"
        "  - id: t\n    command: \"echo mine > f.txt; echo out; echo err >&2\"\n    checks: ['echo checked']\n"
        "  - id: hold\n    workspace: {mode: shared}\n"
        f"    command: \"echo held; echo go > {ready.path}; cat {gate} > /dev/null\"\n"
        "    dependencies: [t]\n"
    )
    repo = make_repo(tmp_path, roadmap)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(state), "--keep-worktrees",
         "--agents", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env_without_git(),
        preexec_fn=lambda: os.umask(0),
    )
    with closing(ready), reaped(proc):
        ready.wait_lines(1, timeout=60)
        deadline = time.monotonic() + 30
        while wvo(repo / "roadmap.yaml", "--state-dir", state, "--status", "--json").returncode != 0:
            assert time.monotonic() < deadline, "the board was never served"
        live = modes_under(state, skip_inside=WORKTREES)
        with open(gate, "w"):
            pass
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert any(p.endswith("board.key") for p in live) and any(p.endswith("board.sock") for p in live), str(sorted(live))
    assert any(p.endswith("ledger.sqlite-wal") for p in live), sorted(live)
    after = modes_under(state, skip_inside=WORKTREES)
    assert any(re.fullmatch(r"runs/[^/]+/ws/worktrees/t", p) for p in after), sorted(after)
    assert any(p.endswith("logs/t.1.log") for p in after) and any(p.endswith("logs/hold.1.log") for p in after)
    live_bad, after_bad = not_private(live), not_private(after)
    assert not live_bad and not after_bad, f"while live: {live_bad}; after: {after_bad}"


def env_without_git() -> dict[str, str]:
    """The test's environment without GIT_* (as test_worktrees' GIT_ENV), with this test's tags."""
    return {**GIT_ENV, **{k: v for k, v in os.environ.items() if k.startswith("WVO_TEST")}}


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644)])
def test_the_report_and_trace_a_run_writes_follow_the_users_umask(tmp_path, umask, mode):
    """They hold the run's commands and errors: a user whose umask keeps new files private gets them private."""
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: 'true'\n")
    report, trace = tmp_path / "report.html", tmp_path / "trace.json"
    r = subprocess.run(
        [sys.executable, "-m", "runner", str(rm), "--state-dir", str(tmp_path / "state"), "--report", str(report),
         "--trace", str(trace), "-q"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, preexec_fn=lambda: os.umask(umask),
    )
    assert r.returncode == 0, r.stderr
    assert {p.name: f"{stat.S_IMODE(os.stat(p).st_mode):04o}" for p in (report, trace)} == {
        "report.html": f"{mode:04o}", "trace.json": f"{mode:04o}"}


def test_a_log_fetched_from_a_ray_node_is_private_and_never_written_through_a_symlink(tmp_path):
    """The driver writes a remote attempt's log into the run folder itself: 0600 whatever the umask, and a
    symlink found at its place is not followed."""
    from runner.agents import ray_backend

    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / "u.1.log").symlink_to(target)
    log = tmp_path / "t.1.log"
    old = os.umask(0)
    try:
        ray_backend._write_log(str(log), b"out\n", "wb")
        ray_backend._write_log(str(log), b"note\n", "ab")
        ray_backend._write_log(str(tmp_path / "u.1.log"), b"out\n", "wb")  # refused: a warning, no write
        with pytest.raises(OSError):
            ray_backend._open_log(str(tmp_path / "u.1.log"))  # as a large log is fetched
    finally:
        os.umask(old)
    assert log.read_bytes() == b"out\nnote\n" and stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert target.read_text() == "keep\n"


def test_a_task_cannot_make_its_next_attempts_log_overwrite_a_file_through_a_symlink(tmp_path):
    """A task (a coding agent is not trusted) plants symlinks where its retry's log and the agents' spare
    log files will be: the retry's output must not be written through them into the user's file."""
    target = tmp_path / "precious"
    target.write_text("keep\n")
    state = tmp_path / "state"
    logs = f"$(readlink -f {state}/latest)/logs"
    plant = "; ".join(f"ln -sf {target} {logs}/{name}" for name in
                      ["a.2.log", *(f".spare-{role}-{i}" for role in ("orchestrator", "worker", "critic") for i in range(2))])
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    retries: 1\n    command: " + json.dumps(
        f"if [ -e {tmp_path}/planted ]; then echo second attempt; else {plant}; touch {tmp_path}/planted; exit 1; fi") + "\n")
    r = wvo(rm, "--state-dir", state, "--agents", "2", "-q", "--json")
    assert (tmp_path / "planted").exists(), r.stderr
    assert target.read_text() == "keep\n"
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_task_that_swaps_its_own_log_cannot_make_wvo_batch_write_elsewhere_or_hang(tmp_path, kind):
    """The task replaces its named log (and the file its check's output goes to) with a symlink to a file of
    the user's, or a FIFO: the checks' output must not be appended through it, the run must not block on
    the FIFO, and `--history N` (which reads the log's check markers) must answer."""
    target = tmp_path / "precious"
    target.write_text("keep\n")
    state = tmp_path / "state"
    log = f"$(readlink -f {state}/latest)/logs/a.1.log"
    swap = f"ln -sf {target}" if kind == "symlink" else "mkfifo"
    command = (f"L={log}; for i in $(seq 600); do [ -f $L ] && break; sleep 0.05; done; [ -f $L ] || exit 9; "
               f"rm -f $L; {swap} $L; {swap} $L.check1")
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: " + json.dumps(command) + "\n    checks: ['echo checked']\n")
    r = wvo(rm, "--state-dir", state, "-q", timeout=60)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert target.read_text() == "keep\n", "wvo-batch wrote through the symlink the task planted"
    h = wvo(rm, "--state-dir", state, "--history", "1", timeout=30)
    assert h.returncode == 0 and "Traceback" not in h.stderr, h.stderr


def test_a_task_that_plants_a_folder_at_the_board_key_does_not_bring_the_run_down(tmp_path):
    """The board is served a quarter of a second into the run, in the run folder a task can reach: a folder
    planted at board.key made the manager die ("Is a directory") and every agent with it. The board is
    optional: the run goes on without it, saying why."""
    state = tmp_path / "state"
    planted = tmp_path / "planted"
    events = f"$(readlink -f {state}/latest)/events.jsonl"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n  - id: a\n    command: " + json.dumps(
        f"mkdir $(readlink -f {state}/latest)/board.key && touch {planted}; true") + "\n"
        # b lasts until the board's second refresh (0.5 s in), after its serving (0.25 s in)
        "  - id: b\n    dependencies: [a]\n    command: " + json.dumps(
        f"for i in $(seq 400); do [ $(grep -c status:updated {events}) -ge 2 ] && exit 0; sleep 0.05; done; exit 1") + "\n")
    r = wvo(rm, "--state-dir", state, timeout=60)
    if not planted.exists():
        pytest.skip("the board was served before the task could plant its folder (a loaded machine)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "board.key" in r.stderr, r.stderr


def test_a_worktree_task_cannot_make_the_branch_journal_write_into_a_file_of_the_users(tmp_path):
    """The journal of the run's branches is two folders above a task's worktree: a task that swapped it for a
    symlink had wvo-batch append its records to (and chmod 0600) the file it pointed at."""
    target = tmp_path / "precious"
    target.write_text("keep\n")
    os.chmod(target, 0o644)
    roadmap = WORKTREE + "tasks:\n  - id: t\n    command: " + json.dumps(
        f"J=$(git rev-parse --show-toplevel)/../../workspaces.jsonl; test -f $J && ln -sf {target} $J && echo x > f.txt") + "\n"
    repo = make_repo(tmp_path, roadmap)
    r = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "-q", timeout=90)
    assert "Traceback" not in r.stderr, r.stderr
    assert target.read_text() == "keep\n" and stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert r.returncode == 1 and "workspaces.jsonl" in r.stdout + r.stderr  # the task that did it fails, saying where


def test_a_worktree_task_cannot_make_the_worktree_lock_create_a_file_elsewhere(tmp_path):
    """The lock of `git worktree` calls sits beside the journal: a dangling symlink planted there made the next
    landing create the file it named, outside the state dir."""
    created = tmp_path / "created"
    roadmap = WORKTREE + "tasks:\n  - id: t1\n    command: " + json.dumps(
        f"ln -sf {created} $(git rev-parse --show-toplevel)/../../.worktree.lock && echo a > a.txt") + "\n"
    roadmap += "  - id: t2\n    dependencies: [t1]\n    command: 'echo b > b.txt'\n"
    repo = make_repo(tmp_path, roadmap)
    r = wvo(repo / "roadmap.yaml", "--state-dir", tmp_path / "state", "-q", timeout=90)
    assert "Traceback" not in r.stderr, r.stderr
    assert not created.exists(), "wvo-batch created a file through the symlink a task planted"
    assert r.returncode == 1 and ".worktree.lock" in r.stdout + r.stderr


def test_a_call_runs_in_its_tasks_cwd_and_the_next_task_in_its_own(tmp_path):
    """A `call:` ran in the folder wvo-batch was started in whatever its `cwd:` said: a call that runs git
    (or writes files) in its scratch folder worked in the user's checkout instead. 200 of them: quick calls
    are handed out in chunks, run one after another in the agent."""
    (tmp_path / "scratch").mkdir()
    rm = tmp_path / "roadmap.yaml"
    rm.write_text("tasks:\n" + "".join(f"  - id: c{i}\n    cwd: scratch\n    call: os:getcwd\n" for i in range(200))
                  + "  - id: d\n    dependencies: [c199]\n    call: os:getcwd\n")
    started_in = tmp_path / "here"
    started_in.mkdir()
    r = wvo(rm, "--state-dir", tmp_path / "state", "--roles", "worker=1", "--json", cwd=started_in)
    assert r.returncode == 0, r.stderr
    values = {t["task"]: t.get("value") for t in json.loads(r.stdout)["tasks"]}
    assert values.pop("d") == str(started_in)
    assert set(values.values()) == {str(tmp_path / "scratch")}


@pytest.mark.parametrize("kind", ["symlink", pytest.param("theirs", marks=as_root)])
def test_a_ray_nodes_log_folder_planted_by_someone_else_is_refused_not_followed(tmp_path, kind):
    """On another node an attempt's log goes under the node's temporary folder, which every user shares:
    a folder planted there (a symlink, or a folder of another user's) is refused, never written into."""
    pytest.importorskip("ray")
    from runner.agents import ray_actor

    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    root = tmp_path / "node-logs"
    root.mkdir(mode=0o700)
    driver_log = "/home/u/.local/state/wvo-batch/rm-1/runs/0001-x/logs/t.1.log"
    planted = root / "rm-1"  # the level below the root: the state dir's name
    if kind == "symlink":
        planted.symlink_to(outside)
    else:
        planted.mkdir(mode=0o777)
        os.chown(planted, 65534, -1)
    with pytest.raises(OSError) as refused:
        ray_actor._node_log_path(str(root), driver_log)
    assert refused.value.filename == str(planted)
    assert os.listdir(outside) == [] and (kind == "symlink" or os.listdir(planted) == [])
    fresh = tmp_path / "fresh"  # and what it makes is the user's alone, whatever the umask
    old = os.umask(0)
    try:
        path = ray_actor._node_log_path(str(fresh), driver_log)
    finally:
        os.umask(old)
    assert path == str(fresh / "rm-1" / "0001-x" / "t.1.log")
    assert {f"{stat.S_IMODE(os.stat(p).st_mode):04o}" for p in (fresh, fresh / "rm-1", fresh / "rm-1" / "0001-x")} == {"0700"}
