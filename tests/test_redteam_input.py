"""Bad input at the edge, through the real command: each case is exit 2 with a line or two naming the
place, no traceback, nothing run, nothing left behind as if it ran."""

from __future__ import annotations

import json
import os

import pytest

from conftest import wvo
from helpers import roadmap_file

pytestmark = pytest.mark.timeout(60)


def refused(r, *needles: str) -> str:
    """A usage error: exit 2, one or two lines, no traceback, no raw control character; the lines name each needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stdout + r.stderr
    assert 1 <= len(err.splitlines()) <= 2, err
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in r.stdout + r.stderr), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture
def marked(tmp_path):
    marker = tmp_path / "ran"
    return roadmap_file(tmp_path, [("a", f"touch {marker}")]), marker


# -- an option given an empty value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag",
    ["--state-dir", "--events", "--trace", "--report", "--roles", "--memfree", "--into", "--ray-address",
     "--budget-unknown-cost", "--executor", "--workspace", "--land", "--backend", "--agents"],
)  # fmt: skip
@pytest.mark.parametrize("form", ["=", " "])
def test_an_option_given_an_empty_value_is_refused_not_read_as_unset(marked, tmp_path, flag, form):
    """`--state-dir "$DIR"` with DIR unset must not run with the default state dir (nor --report "$OUT" with no
    report): the empty value is a usage error naming the option, and nothing runs anywhere."""
    rm, marker = marked
    xdg = tmp_path / "xdg"
    argv = [f"{flag}="] if form == "=" else [flag, ""]
    state = [] if flag == "--state-dir" else ["--state-dir", tmp_path / "s"]
    r = wvo(rm, *state, *argv, env={"XDG_STATE_HOME": str(xdg)}, timeout=30)
    refused(r, flag)
    assert not marker.exists()
    assert not xdg.exists() and not (tmp_path / "s").exists()


def test_an_empty_environment_variable_still_counts_as_unset(marked, tmp_path):
    rm, marker = marked
    env = {"WVO_STATE_DIR": "", "WVO_REPORT": "", "WVO_ROLES": "", "XDG_STATE_HOME": str(tmp_path / "xdg")}
    r = wvo(rm, "--agents", "1", "--quiet", env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert marker.exists() and (tmp_path / "xdg" / "wvo-batch").is_dir()


def test_an_unknown_backend_is_refused_before_the_state_dir_is_made(marked, tmp_path):
    rm, marker = marked
    refused(wvo(rm, "--state-dir", tmp_path / "s", "--backend", "nope", timeout=30), "--backend", "local, ray")
    assert not marker.exists()
    assert not (tmp_path / "s").exists()  # no ledger, no lock file: nothing looks as if a run began


# -- --check says what the run would say -----------------------------------------------------------------


@pytest.mark.parametrize("workspace", ["", "    workspace: {mode: shared}\n"], ids=["plain", "shared"])
def test_check_refuses_a_review_the_run_would_refuse(tmp_path, workspace):
    """`review:` on a task outside a worktree: the run refuses it before it starts (exit 2, file:line); --check,
    the validation of the same roadmap with the same flags, must not call it valid."""
    marker = tmp_path / "ran"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: t\n    command: touch {marker}\n    review: true\n{workspace}")
    run = wvo(rm, "--state-dir", tmp_path / "s", timeout=30)
    refused(run, f"{rm}:2: task t", "`review` needs the task in a worktree")
    assert not marker.exists() and not (tmp_path / "s").exists()
    check = wvo(rm, "--check", timeout=30)
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert f"{rm}:2: task t: `review` needs the task in a worktree" in check.stdout
    doc = json.loads(wvo(rm, "--check", "--json", timeout=30).stdout)
    assert doc["valid"] is False
    assert [(e["line"], e["task"]) for e in doc["errors"]] == [(2, "t")]


# -- `agents:` in the roadmap, held to what --roles is held to --------------------------------------------


@pytest.mark.parametrize("agents", ["{worker: 0}", "{orchestrator: 0, worker: 0, critic: 0}"])
def test_an_agents_block_with_no_agent_is_refused_at_its_line_and_nothing_runs(tmp_path, agents):
    """--roles worker=0 is a usage error; the same pool written in the roadmap started a run on no agent,
    recorded it failed, and exited 1 with the task skipped as "could not be scheduled"."""
    marker = tmp_path / "ran"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"tasks:\n  - id: a\n    command: touch {marker}\nagents: {agents}\n")
    refused(wvo(rm, "--state-dir", tmp_path / "s", timeout=30), f"{rm}:4", "`agents:`", "at least one")
    assert not marker.exists() and not (tmp_path / "s").exists()
    check = wvo(rm, "--check", timeout=30)
    assert check.returncode == 2 and f"{rm}:4: `agents:`" in check.stdout, check.stdout


def test_an_agents_block_over_the_command_lines_limit_in_all_is_refused(tmp_path):
    """Each agent is an OS process: --roles allows 1024 in all; `agents:` allowed 4096 per role, any number of roles.
    Checked with --check only: were it not refused, a run would start 2000 processes."""
    rm = tmp_path / "roadmap.yaml"
    rm.write_text('tasks:\n  - id: a\n    command: "true"\nagents:\n  worker: 1000\n  critic: 1000\n')
    check = wvo(rm, "--check", timeout=30)
    assert check.returncode == 2, check.stdout
    assert f"{rm}:5: `agents:` has 2000 agents in all; give at most 1024" in check.stdout, check.stdout


def test_agents_blocks_of_two_files_are_counted_together(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text('agents: {worker: 0}\ntasks:\n  - id: a\n    command: "true"\n')
    two.write_text('agents: {critic: 1}\ntasks:\n  - id: b\n    command: "true"\n')
    r = wvo(one, two, "--check", timeout=30)
    assert r.returncode == 0, r.stdout


# -- a resource named like a variable wvo-batch sets itself ------------------------------------------------


@pytest.mark.parametrize("name", ["attempt", "task_id", "branch", "worktree", "base_commit", "run_marks"])
def test_a_resource_whose_variable_the_run_sets_itself_is_refused(tmp_path, name):
    """A pool `attempt` is leased as WVO_ATTEMPT: the lease overwrote the attempt number the task was given
    (and `task_id` its WVO_TASK_ID), silently. Refused at its line, before anything runs."""
    marker = tmp_path / "ran"
    rm = tmp_path / "roadmap.yaml"
    rm.write_text(f"resources:\n  {name}: [x, y]\ntasks:\n  - id: a\n    uses: [{name}]\n    command: touch {marker}\n")
    err = refused(wvo(rm, "--state-dir", tmp_path / "s", timeout=30), f"{rm}:2", f"WVO_{name.upper()}")
    assert f"resources:` name {name!r}" in err
    assert not marker.exists() and not (tmp_path / "s").exists()


# -- roadmap text on a pipe: spelt out, never dropped --------------------------------------------------------


def test_an_id_holding_an_escape_sequence_is_named_as_written_off_a_terminal(tmp_path):
    """Off a terminal (cron, CI logs) the CLI drops colour codes as typer did; it dropped a CSI sequence inside a
    task id too, so the error named `task ab`, another task of the file, and not the duplicate `a<ESC>[0mb`."""
    rm = tmp_path / "roadmap.yaml"
    rm.write_text('tasks:\n  - id: "a\\e[0mb"\n    command: "true"\n  - id: "a\\e[0mb"\n    command: "true"\n'
                  '  - id: ab\n    command: "true"\n')  # fmt: skip
    run = wvo(rm, "--state-dir", tmp_path / "s", timeout=30)
    err = refused(run, f"{rm}:4: task a\\x1b[0mb: duplicate task id")
    assert "task ab:" not in err
    check = wvo(rm, "--check", "--max-tasks", "5", timeout=30)
    assert check.returncode == 2 and "\x1b" not in check.stdout + check.stderr
    assert f"{rm}:4: task a\\x1b[0mb: duplicate task id" in check.stdout, check.stdout
    assert "    a\\x1b[0mb: simple (inferred)" in check.stdout, check.stdout


def test_invisible_characters_in_ids_are_spelt_out_so_two_ids_never_read_the_same(tmp_path):
    """`a` and `a<U+200B>` are two tasks; printed raw they read the same, and `unknown dependency a` named a
    task the plan seemed to list. Format characters (zero-width, tags, ...) are spelt out like the bidi ones."""
    rm = tmp_path / "roadmap.yaml"
    rm.write_text('tasks:\n  - id: a\n    command: "true"\n  - id: "a\\u200b"\n    command: "true"\n'
                  '  - id: b\n    command: "true"\n    dependencies: ["a\\u2060", "a\\U000E0041"]\n')  # fmt: skip
    r = wvo(rm, "--check", "--strict", timeout=30)
    assert r.returncode == 2, r.stdout
    assert "    a\\u200b: simple (inferred)" in r.stdout, r.stdout
    assert "unknown dependency `a\\u2060`" in r.stdout and "unknown dependency `a\\U000e0041`" in r.stdout, r.stdout


def test_every_format_and_line_separator_character_is_spelt_out():
    import unicodedata

    from runner.cli.terminal import visible

    kept = {"\u200c", "\u200d"}  # zero-width (non-)joiner: parts of words in many scripts, and of emoji
    for c in map(chr, range(0x110000)):
        if unicodedata.category(c) in ("Cf", "Zl", "Zp") and c not in kept:
            assert visible(f"x{c}y") != f"x{c}y", f"U+{ord(c):04X}"
            assert visible(f"x{c}y").isascii()


# -- an output file that is one of the run's own inputs --------------------------------------------------------


@pytest.mark.parametrize("flag", ["--report", "--trace", "--events"])
@pytest.mark.parametrize("target", ["roadmap", "roadmap-link", "ledger"])
def test_an_output_that_is_the_roadmap_or_the_ledger_is_refused_and_nothing_is_lost(tmp_path, flag, target):
    """`--report roadmap.yaml` replaced the roadmap with the HTML report (exit 0), `--events` appended JSON lines
    to it or to the ledger's SQLite file: an output path mixed up with an input is refused before anything runs."""
    marker = tmp_path / "ran"
    rm = roadmap_file(tmp_path, [("a", f"touch {marker}")])
    state = tmp_path / "s"
    assert wvo(rm, "--state-dir", state, "--quiet", timeout=30).returncode == 0  # a ledger with run 1
    marker.unlink()
    link = tmp_path / "link.yaml"
    link.symlink_to(rm)
    path = {"roadmap": rm, "roadmap-link": link, "ledger": state / "ledger.sqlite"}[target]
    before = {p: p.read_bytes() for p in (rm, state / "ledger.sqlite")}
    refused(wvo(rm, "--state-dir", state, flag, path, timeout=30), flag, "nothing ran")
    assert not marker.exists()
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(state / "runs")) == sorted(os.listdir(state / "runs"))[:1]  # run 1 alone


def test_an_output_that_is_the_executor_file_is_refused(marked, tmp_path):
    rm, marker = marked
    cli = tmp_path / "cli.yaml"
    cli.write_text('command: [my-cli, "{prompt}"]\n')
    refused(wvo(rm, "--state-dir", tmp_path / "s", "--executor", cli, "--report", cli, timeout=30), "--report", "--executor")
    assert cli.read_text() == 'command: [my-cli, "{prompt}"]\n'
    assert not marker.exists()


def test_two_outputs_given_the_same_file_are_refused(marked, tmp_path):
    rm, marker = marked
    out = tmp_path / "out"
    refused(wvo(rm, "--state-dir", tmp_path / "s", "--trace", out, "--report", out, timeout=30), "--trace", "--report")
    assert not marker.exists() and not out.exists()


def test_history_of_a_roadmap_with_no_runs_says_so_and_names_a_missing_file(tmp_path):
    """A state dir shared by several roadmaps: --history of one never run (a typo of its path, say) printed an
    empty table; without the ledger it said `no runs recorded`. Both say it, and name a path that is not there."""
    rm = roadmap_file(tmp_path, [("a", "true")])
    state = tmp_path / "s"
    assert wvo(rm, "--state-dir", state, "--quiet", timeout=30).returncode == 0
    typo = tmp_path / "roadmapp.yaml"
    for where in (["--state-dir", state], ["--state-dir", tmp_path / "none"]):
        r = wvo(typo, *where, "--history", timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"no runs recorded for this roadmap ({typo}: no such file)", r.stdout


def test_a_relative_xdg_state_home_is_ignored_as_the_spec_says(marked, tmp_path):
    """XDG_STATE_HOME=state put the default state dir under the current folder: another folder, another ledger,
    and `--resume` from elsewhere found no run. The XDG spec: a relative path is invalid and ignored."""
    rm, marker = marked
    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    r = wvo(rm, "--quiet", env={"XDG_STATE_HOME": "state", "HOME": str(home)}, cwd=here, timeout=30)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
    assert not (here / "state").exists()
    assert len(list((home / ".local" / "state" / "wvo-batch").iterdir())) == 1


def test_a_newline_in_an_id_cannot_forge_a_line_of_the_output(tmp_path):
    """An id `x<LF>error: forged line` printed its problem over two lines, the second one an error of its own
    making; the --check plan too. Each problem is one line: newline and tab spelt out, as on the run's board."""
    rm = tmp_path / "roadmap.yaml"
    rm.write_text('tasks:\n  - id: "x\\nerror: forged line"\n    command: "true"\n  - id: "x\\nerror: forged line"\n'
                  '    command: "true"\n  - id: "y\\tz"\n    command: "true"\n    dependencies: ["q\\nwarning: forged"]\n')  # fmt: skip
    run = wvo(rm, "--state-dir", tmp_path / "s", timeout=30)
    err = refused(run, f"{rm}:4: task x\\nerror: forged line: duplicate task id")
    assert len(err.splitlines()) == 1
    check = wvo(rm, "--check", "--max-tasks", "5", timeout=30)
    assert check.returncode == 2
    lines = (check.stdout + check.stderr).splitlines()
    assert not any(line.lstrip().startswith(("error: forged", "warning: forged")) for line in lines), lines
    assert "\t" not in check.stdout + check.stderr
    assert "    y\\tz: depends on unknown task `q\\nwarning: forged`" in lines, lines


# -- an executor file that is not a file ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "roadmap"])
def test_an_executor_file_that_is_a_fifo_is_refused_not_read_for_ever(tmp_path, where):
    """A roadmap that is a FIFO or /dev/zero is refused; the executor file was opened and read as it came: a FIFO
    with no writer blocked the command for ever (and /dev/zero filled the memory: not tried here, for a
    planted bug would do it to the machine; the same check refuses both)."""
    path = tmp_path / "cli.yaml"
    os.mkfifo(path)
    rm = tmp_path / "roadmap.yaml"
    head = f"executor: {path}\n" if where == "roadmap" else ""
    rm.write_text(f"{head}tasks:\n  - id: e\n    title: Do it\n")
    flag = ["--executor", path] if where == "flag" else []
    r = wvo(rm, "--check", *flag, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "not a regular file" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
