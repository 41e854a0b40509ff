"""The critic's review and model escalation (issue 16): verdicts, routing, rounds, a read-only critic, the ladder.

Pure parts with plain calls and a fake clock; end to end with real git repositories in tmp_path, the real
`wvo-batch` command, and one small agent script as both worker and critic (it tells them apart by
WVO_REVIEW, which wvo-batch sets for a review attempt).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wvo
from runner.coding import executors
from runner.coding import review as rv
from runner.manager.scheduler import AgentView, Scheduler
from runner.model import Complexity, Outcome, Task, TaskState

GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


# -- the verdict ---------------------------------------------------------------------------------------


def test_one_verdict_line_in_any_case_and_markdown_and_two_different_are_none():
    text = "I looked.\nVERDICT: REJECT tests missing\nOn reflection:\n**verdict: approve**\n"
    assert rv.parse_verdict(text) is None  # fail closed: see tests/test_verdicts.py
    assert rv.parse_verdict("**verdict: approve**\n") == rv.Verdict(True, "")
    assert rv.parse_verdict("> Verdict: Reject - the README still says foo.\n") == rv.Verdict(False, "the README still says foo")
    assert rv.parse_verdict("VERDICT: REJECT") == rv.Verdict(False, "(no reason given)")


@pytest.mark.parametrize("text", ["", "I approve of this.", "The verdict is APPROVE", "VERDICT: MAYBE", "VERDICT: APPROVED"])
def test_anything_else_is_no_verdict(text):
    assert rv.parse_verdict(text) is None


def test_a_structured_result_is_read_for_its_final_text():
    # claude -p --output-format json: the agent's answer is in `result`, escaped inside one JSON line
    line = json.dumps({"type": "result", "subtype": "success", "is_error": False,
                       "result": "Looks fine.\nVERDICT: REJECT rename foo to bar", "session_id": "s"})
    assert rv.verdict_of(line.encode(), "claude-json") == rv.Verdict(False, "rename foo to bar")
    assert rv.verdict_of(b"plain text\nVERDICT: APPROVE\n") == rv.Verdict(True, "")


def test_review_policy_and_rounds():
    problems: list[str] = []
    assert rv.parse_policy(True, None, problems) == rv.Policy(None, 2)
    assert rv.parse_policy({"when": "moderate"}, 3, problems) == rv.Policy("moderate", 3)
    assert rv.parse_policy(False, 5, problems) is None and not problems
    rv.parse_policy("yes", None, problems)
    rv.parse_policy(True, 0, problems)
    assert len(problems) == 2 and "review" in problems[0] and "review_rounds" in problems[1]
    policy = rv.Policy("moderate")
    simple, complex_ = Task("a", complexity=Complexity.SIMPLE), Task("b", complexity=Complexity.COMPLEX)
    assert not rv.needs_review(simple, policy, "simple") and rv.needs_review(complex_, policy, "complex")
    assert rv.needs_review(Task("c"), policy, "")  # unknown complexity: reviewed (fail closed)


# -- escalation ----------------------------------------------------------------------------------------


def test_escalate_chooses_the_model_by_attempt_over_the_models_table():
    ex = executors.parse({"command": ["agent", "--model", "{model}", "{prompt}"], "models": {"default": "table"},
                          "escalate": ["haiku", "sonnet", "opus"]})
    task = Task("t", title="x")
    assert [executors.model_of(task, "worker", ex, k) for k in (1, 2, 3, 4, 9)] == ["haiku", "sonnet", "opus", "opus", "opus"]
    assert executors.build_argv(task, "worker", ex, attempt=2)[2] == "sonnet"
    with pytest.raises(executors.ExecutorError, match="escalate"):
        executors.parse({"command": ["a"], "escalate": "opus"})
    with pytest.raises(executors.ExecutorError, match=r"review_prompt: unknown template field \{nope\}"):
        executors.parse({"command": ["a", "{prompt}"], "review_prompt": "{diff} {nope}"})


def test_the_review_prompt_gets_diff_and_checks():
    ex = executors.parse({"command": ["agent", "{prompt}"], "review_prompt": "R {id}: {checks} / {diff}"})
    argv = executors.build_argv(Task("t1"), "critic", ex, review={"diff": "+x", "checks": "- make test (exit 0)"})
    assert argv[1] == "R t1: - make test (exit 0) / +x"
    assert f"at most {rv.DIFF_CAP} bytes" in rv.DEFAULT_REVIEW_PROMPT


# -- routing (pure, fake clock) ----------------------------------------------------------------------------

W, C = AgentView("worker-0", "worker"), AgentView("critic-0", "critic")


def _sched(rounds=2, route_wait=0.5):
    return Scheduler([Task("t")], now=0.0, roles={"worker", "critic"}, route_wait=route_wait, review_rounds={"t": rounds})


def _run_on(s, agent, now, outcome):
    [(a, task)] = s.assign([agent], now)
    assert a.id == agent.id
    s.started(task.id, a.id)
    return s.finish(task.id, a.id, outcome, now)


def test_a_review_goes_to_the_critic_and_a_rejection_back_to_a_worker():
    s = _sched()
    _run_on(s, W, 0.0, Outcome.NEEDS_REVIEW)
    assert s.reviewing("t") and s.state["t"] is TaskState.QUEUED
    assert s.assign([W], 0.1) == []  # a worker is idle, but the review waits for the critic
    _run_on(s, C, 0.2, Outcome.REJECTED)
    assert not s.reviewing("t")
    assert s.assign([C], 10.0) == []  # rework: never a critic while the pool has workers
    _run_on(s, W, 10.0, Outcome.NEEDS_REVIEW)
    _run_on(s, C, 10.1, Outcome.SUCCEEDED)
    assert s.state["t"] is TaskState.SUCCEEDED


def test_a_review_takes_any_agent_after_route_wait():
    s = _sched()
    _run_on(s, W, 0.0, Outcome.NEEDS_REVIEW)
    assert s.next_timer(0.0) == pytest.approx(0.5)
    _run_on(s, W, 0.6, Outcome.SUCCEEDED)


def test_review_rounds_exhausted_is_needs_improvement_and_not_a_counted_retry():
    s = _sched(rounds=2)
    for now in (0.0, 1.0):
        _run_on(s, W, now, Outcome.NEEDS_REVIEW)
        _run_on(s, C, now + 0.1, Outcome.REJECTED)
    assert s.state["t"] is TaskState.FAILED and s.reason["t"] == "needs_improvement"
    assert s.counted.get("t", 0) == 0 and s.rejections["t"] == 2


def test_a_failed_review_attempt_is_retried_as_a_review():
    s = Scheduler([Task("t", retries=1)], now=0.0, roles={"worker", "critic"}, backoff_base=0.0, review_rounds={"t": 2})
    _run_on(s, W, 0.0, Outcome.NEEDS_REVIEW)
    _run_on(s, C, 0.1, Outcome.FAILED)  # no verdict
    assert s.reviewing("t") and s.counted["t"] == 1
    assert s.assign([W], 0.2) == []
    _run_on(s, C, 0.3, Outcome.SUCCEEDED)


# -- end to end ------------------------------------------------------------------------------------------------

AGENT = r'''
import json, os, pathlib, subprocess, sys
role, prompt = sys.argv[1], sys.argv[-1]
model = sys.argv[2] if len(sys.argv) == 4 else ""  # no model configured: wvo-batch leaves {model} out
out = pathlib.Path(os.environ["AGENT_OUT"])
task, attempt = os.environ["WVO_TASK_ID"], int(os.environ["WVO_ATTEMPT"])
record = {"role": role, "model": model, "prompt": prompt, "cwd": os.getcwd(), "review": bool(os.environ.get("WVO_REVIEW"))}
(out / f"{task}.{attempt}.json").write_text(json.dumps(record))
with open(out / "calls.txt", "a") as f:
    f.write(role + "\n")
if os.environ.get("WVO_REVIEW"):
    seen = out / f"{task}.reviews"
    n = int(seen.read_text()) + 1 if seen.exists() else 1
    seen.write_text(str(n))
    mode = os.environ.get("CRITIC", "approve")
    if mode == "hang-first" and n == 1:  # the test SIGKILLs the manager meanwhile
        (out / "hit").write_text("")
        import time; time.sleep(60)
    if mode == "vandal":  # a critic that edits and commits in its copy, then tries to move the task branch
        pathlib.Path("critic.txt").write_text("the critic was here\n")
        pathlib.Path("hello.txt").write_text("rewritten by the critic\n")
        git = ["git", "-c", "user.name=c", "-c", "user.email=c@example.invalid"]
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "critic"], check=True)
        if n == 1:
            subprocess.run(git + ["branch", "-f", os.environ["WVO_BRANCH"], "HEAD"], check=True)
    verdict = {"approve": "APPROVE", "reject": "REJECT the greeting must name the world",
               "reject-once": "REJECT the greeting must name the world" if n == 1 else "APPROVE",
               "vandal": "APPROVE", "hang-first": "APPROVE"}[mode]
    print("Reviewed.\nVERDICT: " + verdict)
else:
    if attempt <= int(os.environ.get("FAIL_FIRST", "0")):
        print("worker failing on purpose"); sys.exit(1)
    pathlib.Path("hello.txt").write_text(f"hello world, attempt {attempt}\n")
    print("wrote hello.txt")
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=GIT_ENV).stdout


def make_repo(tmp_path: Path, critic: str, extra: str = "", task_extra: str = "", escalate: str = "") -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "user@example.invalid")
    git(repo, "config", "user.name", "A User")
    (repo / "README").write_text("hello\n")
    (repo / "roadmap.yaml").write_text(
        f"executor:\n  command: [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, '{{role}}', '{{model}}', '{{prompt}}']\n"
        f"{escalate}"
        "agents: {worker: 1, critic: 1}\n"
        "workspace: {mode: worktree}\n"
        "defaults:\n  review: true\n  retries: 3\n"
        f"  env: {{AGENT_OUT: {json.dumps(str(out))}, CRITIC: {critic}}}\n{extra}"
        "tasks:\n  - id: T1\n    title: write the greeting\n    description: put a greeting in hello.txt\n"
        "    exit_criteria: [hello.txt greets the world]\n    checks: ['test -f hello.txt']\n"
        f"{task_extra}"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo, out


def run_json(repo: Path, *args: str) -> tuple[int, dict, str]:
    proc = wvo(repo / "roadmap.yaml", "--state-dir", repo.parent / "state", "--json", *args, timeout=90, cwd=repo)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    return proc.returncode, doc, proc.stderr


def attempts(out: Path, task: str = "T1") -> dict[int, dict]:
    return {int(p.name.split(".")[1]): json.loads(p.read_text()) for p in out.glob(f"{task}.*.json")}


def the_row(doc: dict) -> dict:
    return {r["task"]: r for r in doc["tasks"]}["T1"]


@pytest.mark.timeout(120)
def test_a_critic_rejects_once_then_approves_and_the_worker_saw_the_reason(tmp_path, backend):
    # role: worker and --route-wait: a Ray worker actor can come up seconds after the critic's under load,
    # and a task that prefers no role goes to any idle agent; this one's work is a worker's
    repo, out = make_repo(tmp_path, "reject-once", task_extra="    role: worker\n")
    code, doc, err = run_json(repo, *backend, "--route-wait", "60")
    assert code == 0, err
    seen = attempts(out)
    assert [(n, a["role"], a["review"]) for n, a in sorted(seen.items())] == [
        (1, "worker", False), (2, "critic", True), (3, "worker", False), (4, "critic", True)]
    assert "the greeting must name the world" in seen[3]["prompt"]  # the rework's {feedback}
    assert "the greeting must name the world" not in seen[1]["prompt"]
    assert "hello.txt" in seen[2]["prompt"] and "test -f hello.txt (exit 0)" in seen[2]["prompt"]  # {diff}, {checks}
    assert Path(seen[2]["cwd"]) != repo and not Path(seen[2]["cwd"]).exists()  # its own copy, removed after
    row = the_row(doc)
    assert row["status"] == "succeeded"
    assert row["review"]["rounds"] == 2
    assert [(v["verdict"], v["agent"]) for v in row["review"]["verdicts"]] == [("reject", "critic-0"), ("approve", "critic-0")]
    assert git(repo, "show", "wvo/roadmap:hello.txt") == "hello world, attempt 3\n"  # the approved work landed
    assert "wvo-batch" not in git(repo, "worktree", "list")  # every worktree, the critic's too, removed


@pytest.mark.timeout(120)
def test_review_rounds_exhausted_end_the_task_needs_improvement_in_the_roadmap(tmp_path):
    repo, out = make_repo(tmp_path, "reject", extra="  review_rounds: 2\n")
    code, doc, err = run_json(repo, "--write-back")
    assert code != 0
    row = the_row(doc)
    assert row["status"] == "needs_improvement"
    assert [v["verdict"] for v in row["review"]["verdicts"]] == ["reject", "reject"]
    assert len(attempts(out)) == 4  # worker, critic, worker, critic: nothing after the last round
    text = (repo / "roadmap.yaml").read_text()
    assert "status: needs_improvement" in text and "the greeting must name the world" in text
    assert git(repo, "rev-parse", "wvo/roadmap") == git(repo, "rev-parse", "main")  # nothing landed


@pytest.mark.timeout(120)
def test_escalation_uses_the_ladder_by_attempt(tmp_path):
    repo, out = make_repo(tmp_path, "approve", task_extra="    env: {FAIL_FIRST: '2'}\n",
                          escalate="  escalate: [haiku, sonnet, opus]\n")
    code, doc, err = run_json(repo)
    assert code == 0, err
    seen = attempts(out)
    # attempts 1 and 2 fail, 3 succeeds, 4 is the critic's review: the last entry repeats
    assert [seen[n]["model"] for n in sorted(seen)] == ["haiku", "sonnet", "opus", "opus"]
    assert the_row(doc)["models"] == ["haiku", "sonnet", "opus", "opus"]


@pytest.mark.timeout(120)
def test_a_critic_cannot_modify_the_task_branch(tmp_path, backend):
    repo, out = make_repo(tmp_path, "vandal", extra="  workspace: {land: branch}\n")
    code, doc, err = run_json(repo, *backend)
    assert code == 0, err
    branch = the_row(doc)["workspace"]["branch"]
    worker_commit = the_row(doc)["workspace"]["commit"]
    assert git(repo, "rev-parse", branch).strip() == worker_commit  # put back after the critic moved it
    assert git(repo, "show", f"{branch}:hello.txt") == "hello world, attempt 1\n"
    assert "critic.txt" not in git(repo, "ls-tree", "--name-only", branch)
    verdicts = the_row(doc)["review"]["verdicts"]
    assert [v["verdict"] for v in verdicts] == ["approve"]  # the first review failed: the branch had moved
    assert sorted(attempts(out)) == [1, 2, 3]
    assert "wvo-batch" not in git(repo, "worktree", "list")


@pytest.mark.timeout(120)
def test_resume_after_a_crash_mid_review_does_not_land_the_unreviewed_work(tmp_path):
    import signal
    import time

    from conftest import ROOT

    repo, out = make_repo(tmp_path, "hang-first")
    mark = str(tmp_path / "mark")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", str(repo / "roadmap.yaml"), "--state-dir", str(tmp_path / "state"), "-q"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "WVO_TEST_MARK": mark},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out / "hit").exists():  # the critic has it: the work is committed, not reviewed
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        _kill_marked(mark)
    code, doc, err = run_json(repo, "--resume")
    assert code == 0, err
    assert "was not reviewed; running it again" in err
    assert (out / "calls.txt").read_text().split() == ["worker", "critic", "worker", "critic"]
    assert the_row(doc)["review"]["verdicts"][0]["verdict"] == "approve"


def _kill_marked(marker: str) -> None:
    import psutil

    for p in psutil.process_iter():
        try:
            if p.environ().get("WVO_TEST_MARK") == marker:
                p.kill()
        except psutil.Error:
            pass


def test_review_on_a_task_without_a_worktree_is_refused_before_anything_runs(tmp_path):
    roadmap = tmp_path / "roadmap.yaml"
    roadmap.write_text("tasks:\n  - id: A\n    command: 'true'\n    review: true\n")
    proc = wvo(roadmap, "--state-dir", tmp_path / "state")
    assert proc.returncode == 2
    assert "task A: `review` needs the task in a worktree" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_review_setting_is_reported_at_its_place(tmp_path):
    roadmap = tmp_path / "roadmap.yaml"
    roadmap.write_text("defaults:\n  review_rounds: 0\ntasks:\n  - id: A\n    command: 'true'\n    review: sometimes\n")
    proc = wvo(roadmap, "--check")
    assert proc.returncode == 2
    said = proc.stdout + proc.stderr  # --check reports on stdout
    assert "roadmap.yaml:2: `defaults.review_rounds` must be a whole number" in said
    assert "roadmap.yaml:4: task A: `review` must be true, false or {when:" in said
