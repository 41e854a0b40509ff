"""Executors: argv templates for agent CLIs, the models table, presets, and rate limits end to end.

The runs use scripts/fake-agent, a stand-in agent CLI that writes the argv it received to a result file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import ROOT, wvo
from helpers import read_events, roadmap, run, task
from runner.coding import executors
from runner.model import Complexity

pytestmark = pytest.mark.timeout(60)

FAKE_AGENT = ROOT / "scripts" / "fake-agent"


def fake_agent(out: Path, *flags: str) -> list[str]:
    """An argv template running the stand-in with almost no work time, results in `out`."""
    return [
        sys.executable, str(FAKE_AGENT), "--out", str(out), "--scale", "0.05", *flags,
        "--task", "{id}", "--model", "{model}", "--complexity", "{complexity}", "--", "{prompt}",
    ]  # fmt: skip


def results(out: Path) -> dict[tuple[str, int], dict]:
    docs = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return {(d["task"], d["attempt"]): d for d in docs}


def finished(events: list[dict], task_id: str) -> list[dict]:
    return [e for e in events if e["event"] == "task:finished" and e["task"] == task_id]


# -- templates: substitution, never a shell ---------------------------------------------------------------


def test_hostile_title_reaches_the_agent_as_text_and_runs_nothing(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    titles = {
        "T1": "$(touch pwned1)",
        "T2": "`touch pwned2`; touch pwned3 && echo {model} > pwned4",
        "T3": "'; touch pwned5; echo '\n$(touch pwned6) {id} {prompt}",
    }
    executor = {"command": fake_agent(out), "prompt": "{title}", "models": {"default": "m-1"}}
    rm = roadmap([task(tid, title=title, cwd=str(work)) for tid, title in titles.items()], executor=executor)
    result = run(rm, tmp_path / "state", agents=2)
    assert result.exit_code == 0, result.tasks
    assert not list(work.iterdir()), "a title was executed"
    assert not list(ROOT.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    got = results(out)
    for tid, title in titles.items():
        doc = got[(tid, 1)]
        assert doc["prompt"] == title  # verbatim: no shell, no second expansion of {model} / {id}
        assert doc["argv"][-1] == title
        assert doc["argv"][-2] == "--"


def test_fields_fill_inside_elements_once():
    t = task("T1.1.1", title="Fix {description}", description="the $HOME bug", epic="E1", milestone="M1")
    ex = executors.parse({"command": ["agent", "--name={id}-{epic}/{milestone}", "{title}", "{description}"]})
    assert executors.build_argv(t, "worker", ex) == ("agent", "--name=T1.1.1-E1/M1", "Fix {description}", "the $HOME bug")


def test_default_prompt_has_title_description_and_exit_criteria():
    t = task("T2", title="Add caching", description="Cache by day.", exit_criteria=["Hits are logged", {"doc": "a.md"}])
    prompt = executors.task_fields(t, "worker", executors.parse("codex"))["prompt"]
    assert prompt.startswith("Task T2: Add caching\n\nCache by day.\n\nExit criteria:\n- Hits are logged\n- doc: a.md\n")
    empty = executors.task_fields(task("T3", title="x"), "worker", executors.parse("codex"))["prompt"]
    assert "\n\n\n" not in empty and "- none listed" in empty


def test_roadmap_dir_is_the_directory_of_the_tasks_file(tmp_path):
    t = task("T1", file=str(tmp_path / "plans" / "roadmap.yaml"))
    ex = executors.parse(["{roadmap_dir}/../scripts/agent", "{id}"])
    assert executors.build_argv(t, "worker", ex) == (f"{tmp_path / 'plans'}/../scripts/agent", "T1")


def test_meta_fields_and_a_tasks_own_model():
    t = task("T1", meta={"domain": "weather", "model": "special-1"})
    ex = executors.parse({"command": ["agent", "{meta.domain}", "{meta.absent}", "--model", "{model}"], "models": "m"})
    assert executors.build_argv(t, "worker", ex) == ("agent", "weather", "", "--model", "special-1")


# -- the models table ---------------------------------------------------------------------------------------

MODELS = {
    "orchestrator": {"complex": "big", "default": "orch-mid"},
    "critic": "reviewer",
    "default": {"simple": "small", "default": "mid"},
}


@pytest.mark.parametrize(
    ("role", "complexity", "score", "model"),
    [
        ("orchestrator", Complexity.COMPLEX, None, "big"),
        ("orchestrator", Complexity.SIMPLE, None, "orch-mid"),
        ("critic", Complexity.COMPLEX, None, "reviewer"),
        ("worker", Complexity.SIMPLE, None, "small"),
        ("worker", Complexity.MODERATE, None, "mid"),
        ("worker", None, None, "mid"),
        ("worker", None, 2, "small"),  # complexity_score 1-3 is simple
        ("orchestrator", None, 8, "big"),  # 7-10 is complex
    ],
)
def test_model_by_role_and_complexity(role, complexity, score, model):
    ex = executors.parse({"preset": "codex", "models": MODELS})
    t = task("T1", complexity=complexity, complexity_score=score)
    assert executors.task_fields(t, role, ex)["model"] == model


def test_model_follows_the_role_of_the_agent_that_ran_the_task(tmp_path):
    out = tmp_path / "out"
    executor = {"command": fake_agent(out), "models": MODELS}
    tasks = [
        task("complex", complexity=Complexity.COMPLEX),
        task("simple", complexity=Complexity.SIMPLE),
        task("review", title="Review the plan", complexity=Complexity.MODERATE),
        task("plain"),
    ]
    result = run(roadmap(tasks, executor=executor), tmp_path / "state", roles={"orchestrator": 1, "worker": 1, "critic": 1})
    assert result.exit_code == 0, result.tasks
    expected = {"orchestrator": {"complex": "big"}, "critic": {}, "worker": {"simple": "small"}}
    fallback = {"orchestrator": "orch-mid", "critic": "reviewer", "worker": "mid"}
    got = results(out)
    assert len(got) == 4
    for (tid, _), doc in got.items():
        assert doc["model"] == expected[doc["role"]].get(doc["complexity"], fallback[doc["role"]]), doc
        assert doc["argv"][doc["argv"].index("--model") + 1] == doc["model"]
    assert got[("review", 1)]["role"] == "critic"  # routed to the critic, so the critic's model


# -- presets --------------------------------------------------------------------------------------------------


def test_presets_produce_the_documented_argv():
    t = task("T1", title="Do it")
    prompt = executors.task_fields(t, "worker", executors.parse("codex"))["prompt"]
    codex = executors.parse({"preset": "codex", "models": {"default": "gpt-x"}})
    claude = executors.parse({"preset": "claude", "models": {"default": "sonnet"}})
    assert executors.build_argv(t, "worker", codex) == (
        "codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", "--model", "gpt-x", prompt,
    )  # fmt: skip
    assert executors.build_argv(t, "worker", claude) == (
        "claude", "-p", prompt, "--output-format", "stream-json", "--verbose", "--model", "sonnet",
        "--permission-mode", "acceptEdits",
    )  # fmt: skip
    # Without a models table the CLI's own default model is used: `--model {model}` is left out.
    assert executors.build_argv(t, "worker", executors.parse("codex")) == (
        "codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", prompt,
    )  # fmt: skip
    assert executors.build_argv(t, "worker", executors.parse("claude")) == (
        "claude", "-p", prompt, "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits",
    )  # fmt: skip
    doc = (ROOT / "docs" / "executors.md").read_text()
    for name, argv in executors.PRESETS.items():
        assert f"`{name}`: `{' '.join(argv)}`" in doc, f"docs/executors.md does not show the {name} preset"


def test_preset_runs_the_cli_found_on_path(tmp_path):
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    for name in ("codex", "claude"):
        stub = bin_dir / name
        stub.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            f"open(os.path.join({str(out)!r}, os.environ['WVO_TASK_ID'] + '.json'), 'w').write(json.dumps(sys.argv))\n"
        )
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("codex", "claude"):
        rm = roadmap([task(name, title="$(touch pwned)", env=env)])
        result = run(rm, tmp_path / f"state-{name}", agents=1, executor={"preset": name, "models": "m-1"})
        assert result.exit_code == 0, result.tasks
        argv = json.loads((out / f"{name}.json").read_text())
        t = task(name, title="$(touch pwned)")
        expected = executors.build_argv(t, "worker", executors.parse({"preset": name, "models": "m-1"}))
        assert [Path(argv[0]).name, *argv[1:]] == list(expected)
    assert not list(tmp_path.glob("pwned"))


def test_executor_file_from_configs_and_relative_to_a_base_dir(tmp_path):
    for name in ("codex", "claude"):
        ex = executors.parse(f"configs/{name}.yaml", base_dir=str(ROOT))
        assert ex.command[0] == name and ex.output and ex.source == f"configs/{name}.yaml"
    (tmp_path / "agent.json").write_text(json.dumps({"command": ["agent", "{prompt}"], "models": "m"}))
    assert executors.parse("agent.json", base_dir=str(tmp_path)).command == ("agent", "{prompt}")


# -- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (["agent", "{titel}"], ["executor[1]", "{titel}", "known: id, title", "roadmap_dir", "meta.KEY"]),
        ({"command": ["agent"], "prompt": "Do {task}"}, ["executor.prompt", "{task}", "known:"]),
        ({"command": ["agent"], "prompt": "{prompt}"}, ["executor.prompt", "cannot contain {prompt}"]),
        ({"command": ["agent"], "models": ["a", "b"]}, ["executor.models", "mapping of role"]),
        ({"command": ["agent"], "models": {"worker": {"hard": "m"}}}, ["executor.models.worker", "'hard'", "simple"]),
        ({"command": ["agent"], "models": {"worker": {"simple": ""}}}, ["executor.models.worker.simple", "non-empty"]),
        ({"command": ["agent"], "models": {"worker": 3}}, ["executor.models.worker", "model name"]),
        ({"command": ["agent"], "modles": {}}, ["executor", "'modles'", "known: command, preset, prompt, models"]),
        ({"command": ["agent"], "preset": "codex"}, ["exactly one of"]),
        ({"prompt": "x"}, ["exactly one of"]),
        ({"preset": "gemini"}, ["executor.preset", "'gemini'", "codex, claude"]),
        ({"command": ["agent"], "rate_limit": "(429"}, ["executor.rate_limit", "regular expression"]),
        ("gemini", ["unknown preset 'gemini'", "codex, claude"]),
        ([], ["non-empty list"]),
        (["agent", {"x": 1}], ["executor[1]", "strings"]),
        (42, ["executor", "got int"]),
        ("missing/agent.yaml", ["cannot read executor file 'missing/agent.yaml'"]),
    ],
)
def test_parse_rejects_malformed_executors_in_one_line(spec, words):
    with pytest.raises(ValueError) as info:
        executors.parse(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_parse_names_where_the_executor_came_from(tmp_path):
    with pytest.raises(ValueError, match=r"^defaults\.executor\.models: "):
        executors.parse({"command": ["agent"], "models": 1}, where="defaults.executor")
    (tmp_path / "bad.yaml").write_text("executor:\n  command: [agent, '{nope}']\n")
    with pytest.raises(ValueError, match=r"^executor \(bad\.yaml\)\.command\[1\]: unknown template field \{nope\}"):
        executors.parse("bad.yaml", base_dir=str(tmp_path))
    (tmp_path / "broken.yaml").write_text("executor: [agent\n  - x: {\n")
    with pytest.raises(ValueError, match=r"broken\.yaml does not parse") as info:
        executors.parse("broken.yaml", base_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_rate_limit_false_turns_detection_off_and_numbers_become_strings():
    ex = executors.parse({"command": ["agent", "--max-turns", 5, "{prompt}"], "rate_limit": False})
    assert ex.rate_limit is None and ex.command[2] == "5"


def test_unknown_executor_on_the_command_line_is_a_usage_error(tmp_path):
    proc = wvo(ROOT / "configs" / "agents-demo.yaml", "--executor", "gemini", "--state-dir", tmp_path / "state")
    assert proc.returncode == 2, proc.stderr
    assert "executor: unknown preset 'gemini'" in proc.stderr and "Traceback" not in proc.stderr


# -- rate limits, end to end ----------------------------------------------------------------------------------


def test_rate_limited_attempt_is_requeued_uncounted_and_then_succeeds(tmp_path):
    out = tmp_path / "out"
    env = {"FAKE_AGENT_RATE_LIMIT_FIRST": "1", "FAKE_AGENT_RETRY_AFTER": "30"}
    rm = roadmap([task("T1", retries=0, env=env)], executor=fake_agent(out))
    result = run(rm, tmp_path / "state", agents=2)
    assert result.exit_code == 0, result.tasks
    assert result.summary["succeeded"] == 1 and result.summary["failed"] == 0
    row = result.tasks[0]
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    ends = finished(read_events(result), "T1")
    assert [(e["attempt"], e["status"]) for e in ends] == [(1, "rate_limited"), (2, "succeeded")]
    # Only the agent that was told to wait 30 s cools down; the other one takes the task at once.
    assert ends[0]["agent"] != ends[1]["agent"]
    assert ends[1]["ts"] - ends[0]["ts"] < 10
    got = results(out)
    assert got[("T1", 1)]["outcome"] == "rate_limited" and got[("T1", 2)]["outcome"] == "done"


def test_retry_after_is_honoured_before_the_agent_takes_work_again(tmp_path):
    env = {"FAKE_AGENT_RATE_LIMIT_FIRST": "1", "FAKE_AGENT_RETRY_AFTER": "1.5"}
    rm = roadmap([task("T1", env=env)], executor=fake_agent(tmp_path / "out"))
    result = run(rm, tmp_path / "state", agents=1)
    assert result.exit_code == 0, result.tasks
    events = read_events(result)
    limited = finished(events, "T1")[0]
    retry = next(e for e in events if e["event"] == "task:retry")
    restart = next(e for e in events if e["event"] == "task:started" and e["attempt"] == 2)
    assert "rate limited" in retry["reason"] and "cools down 1.5s" in retry["reason"]
    waited = restart["ts"] - limited["ts"]
    assert 1.4 <= waited < 4.0  # the 1.5 s asked for, not the 5 s default cooldown


def test_shared_quota_limits_only_the_first_calls(tmp_path):
    out, state = tmp_path / "out", tmp_path / "quota.count"
    template = fake_agent(out, "--rate-limit-first", "2", "--state", str(state), "--retry-after", "0.2")
    rm = roadmap([task(f"T{i}") for i in range(3)], executor=template)
    result = run(rm, tmp_path / "state", agents=2)
    assert result.exit_code == 0, result.tasks
    outcomes = sorted(d["outcome"] for d in results(out).values())
    assert outcomes == ["done"] * 3 + ["rate_limited"] * 2
    assert state.read_text() == "5"


def test_failure_that_is_not_a_rate_limit_counts(tmp_path):
    out = tmp_path / "out"
    rm = roadmap([task("fails", env={"FAKE_AGENT_FAIL": "1"})], executor=fake_agent(out))
    result = run(rm, tmp_path / "state", agents=1)
    assert result.exit_code == 1
    assert (result.tasks[0]["status"], result.tasks[0]["attempts"]) == ("failed", 1)


def test_rate_limit_pattern_is_configurable(tmp_path):
    # A pattern that does not match the stand-in's "429 rate limit" line: the attempt is a plain failure.
    env = {"FAKE_AGENT_RATE_LIMIT": "1"}
    executor = {"command": fake_agent(tmp_path / "out"), "rate_limit": "quota exhausted"}
    result = run(roadmap([task("T1", env=env)], executor=executor), tmp_path / "state", agents=1)
    assert result.exit_code == 1
    assert [e["status"] for e in finished(read_events(result), "T1")] == ["failed"]
    # The run's own --rate-limit wins over the executor's.
    result = run(
        roadmap([task("T1", env={**env, "FAKE_AGENT_EXIT_CODE": "3"})], executor=executor),
        tmp_path / "state2",
        agents=1,
        rate_limit="nothing matches this",
    )
    assert result.tasks[0]["exit_code"] == 3 and result.tasks[0]["status"] == "failed"


# -- the demo ---------------------------------------------------------------------------------------------------


def test_agents_demo_runs_through_the_stand_in(tmp_path):
    env = {"FAKE_AGENT_SCALE": "0.05", "FAKE_AGENT_OUT": str(tmp_path / "out")}
    proc = wvo(ROOT / "configs" / "agents-demo.yaml", "--agents", "4", "--json", "-q", "--state-dir", tmp_path / "s", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["succeeded"] == 12 and doc["failed"] == 0
    rows = {r["task"]: r for r in doc["tasks"]}
    assert rows["T1.2.1"]["attempts"] == 2  # rate limited once, requeued, succeeded
    assert rows["T2.1.2"]["attempts"] == 2  # failed once, retried
    got = results(tmp_path / "out")
    assert got[("T1.2.1", 1)]["outcome"] == "rate_limited"
    assert all(d["model"].startswith("demo-") for d in got.values())
