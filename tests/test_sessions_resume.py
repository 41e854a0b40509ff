"""Sessions across runs: --resume continues an unfinished agent task's last session, with the real CLIs.

Run 1: attempt 1 writes first.txt through the CLI's own tool, but the task's check wants second.txt;
attempt 2 (resuming that session) hits a usage limit that resets beyond --max-wait, so the run stops
with 75. Run 2 (--resume) continues the same session: the mock sees the first turn in its request.
"""

from __future__ import annotations

import json

import pytest

from test_agent_clis import _skip_reason
from test_compose import ledger_attempts
from test_worktrees import git, make_repo, run_json

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def roadmap(mock, tmp_path, cli: str, extra: str = "") -> tuple[str, dict]:
    from helpers import real_cli_executor

    argv, output, env = real_cli_executor(mock, tmp_path, cli)
    if cli == "claude":
        env.pop("ANTHROPIC_API_KEY")  # a subscription login: its 429 is a usage limit with a reset time
        env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-placeholder"
    text = (
        f"executor:\n  command: {json.dumps(argv)}\n  output: {output}\n"
        "workspace: {mode: worktree}\n"
        f"defaults:\n  retries: 1\n  env: {json.dumps(env)}\n  checks: ['test -f second.txt']\n{extra}"
        "tasks:\n  - id: T1\n    title: write the files\n"
    )
    return text, env


@pytest.mark.parametrize("cli", ["codex", "claude"])
def test_resume_continues_the_session_a_usage_limit_interrupted(tmp_path, cli):
    from mockapi import MockAPI, reply, usage_limit, write_file

    with MockAPI() as mock:
        mock.queue(write_file("first.txt", "one\n"), reply("wrote first.txt"), usage_limit(),
                   write_file("second.txt", "two\n"), reply("wrote second.txt"))  # fmt: skip
        text, _ = roadmap(mock, tmp_path, cli)
        repo = make_repo(tmp_path / "r", text)
        code, _, err = run_json(repo, "--agents", "1", "--max-wait", "60")
        assert code == 75, err[-3000:]
        first_run = ledger_attempts(repo.parent / "state")
        code, doc, err2 = run_json(repo, "--agents", "1", "--resume")
        requests = mock.model_requests()
        assert mock.escapes() == [], "a CLI tried to reach another host"
    session = first_run[0]["session_id"]
    assert first_run[0]["outcome"] == "check_failed" and session, first_run
    assert first_run[-1]["failure"] == "usage_limited", first_run
    line = f"resume: task T1 continues session {session} (interrupted: usage limit)"
    assert line in err2, err2[-3000:]
    resumed = [a for a in ledger_attempts(repo.parent / "state") if a["run_id"] != first_run[0]["run_id"]]
    assert resumed[0]["session_id"] == session, resumed
    assert resumed[0]["outcome"] == "succeeded" and code == 0, (resumed, err2[-3000:])
    assert git(repo, "show", "wvo/roadmap:second.txt") == "two\n"
    assert "wrote first.txt" in json.dumps(requests[-2].body), "the resumed turn did not carry the first run's turn"
    assert "usage limit" in json.dumps(requests[-2].body)  # the reason it was interrupted, as its feedback


def test_session_fresh_starts_over(tmp_path):
    from mockapi import MockAPI, reply, usage_limit, write_file

    with MockAPI() as mock:
        mock.queue(write_file("first.txt", "one\n"), reply("wrote first.txt"), usage_limit(),
                   write_file("second.txt", "two\n"), reply("wrote second.txt"))  # fmt: skip
        text, _ = roadmap(mock, tmp_path, "codex", extra="session: fresh\n")
        repo = make_repo(tmp_path / "r", text)  # `session: fresh` at the top level
        code, _, err = run_json(repo, "--agents", "1", "--max-wait", "60")
        assert code == 75, err[-3000:]
        first_run = ledger_attempts(repo.parent / "state")
        code, doc, err2 = run_json(repo, "--agents", "1", "--resume")
        requests = mock.model_requests()
    assert "continues session" not in err2
    resumed = [a for a in ledger_attempts(repo.parent / "state") if a["run_id"] != first_run[0]["run_id"]]
    assert resumed[0]["session_id"] != first_run[0]["session_id"], resumed
    assert "wrote first.txt" not in json.dumps(requests[-2].body)
    assert code == 0, err2[-3000:]
