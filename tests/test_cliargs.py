"""The command line without typer: the fast parser reads what typer reads, or leaves it to typer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, wvo
from runner.cli import command as cli
from runner.cli.options import OPTIONS, ROADMAPS, parse

pytestmark = pytest.mark.timeout(120)

ENVVARS = [option.envvar for option in OPTIONS if option.envvar]


@pytest.fixture
def environ(monkeypatch):
    """os.environ without any WVO_* option variable; set_env(**vars) adds some, for the parser and typer alike."""
    for name in ENVVARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer's app replaces it; put it back afterwards

    def set_env(env: dict[str, str]):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return os.environ

    return set_env


def typer_reading(argv: list[str]) -> dict:
    """The values typer hands the command for this argv (and os.environ)."""
    from runner.cli.typer_app import build_app

    seen = []
    app = build_app(lambda args: seen.append(vars(args)) or 0)
    assert app(args=argv, prog_name="wvo-batch", standalone_mode=False) == 0
    return seen[0]


def typed(values: dict) -> dict:
    return {name: (type(value), value) for name, value in values.items()}  # 3 and 3.0 must not pass as equal


def test_defaults_are_the_tables(environ):
    args = parse(["r.yaml"], environ({}))
    assert args.roadmaps == ["r.yaml"]
    for option in OPTIONS:
        assert getattr(args, option.name) == ([] if option.kind is list else option.default), option.name


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["r.yaml", "--agents", "3"], {}, {"agents": "3"}),
        (["r.yaml", "--agents=3"], {}, {"agents": "3"}),
        (["-j", "3", "r.yaml"], {}, {"agents": "3"}),
        (["-j3", "r.yaml"], {}, {"agents": "3"}),
        (["r.yaml", "-q"], {}, {"quiet": True}),
        (["r.yaml", "--quiet", "--json", "--check"], {}, {"quiet": True, "json_out": True, "check": True}),
        (["a.yaml", "--check", "b.yaml"], {}, {"roadmaps": ["a.yaml", "b.yaml"], "check": True}),
        (["r.yaml", "--only", "a", "--only=b*", "--only", "epic=E1"], {}, {"only": ["a", "b*", "epic=E1"]}),
        (["r.yaml", "--agents", "2", "--agents", "5"], {}, {"agents": "5"}),
        (["--check", "--", "--json", "-q"], {}, {"roadmaps": ["--json", "-q"], "json_out": False}),
        (["-", "--check"], {}, {"roadmaps": ["-"]}),
        (["r.yaml", "--grace", "2.5", "--retries=2", "--interval", "3"], {}, {"grace": 2.5, "retries": 2}),
        (["r.yaml"], {"WVO_AGENTS": "7", "WVO_RETRIES": "2", "WVO_GRACE": "1.5"}, {"agents": "7", "retries": 2}),
        (["r.yaml", "-j", "2", "--retries", "1"], {"WVO_AGENTS": "7", "WVO_RETRIES": "9"}, {"retries": 1}),
        (["r.yaml"], {"WVO_ONLY": " a  b\tc "}, {"only": ["a", "b", "c"]}),
        (["r.yaml", "--only", "x"], {"WVO_ONLY": "a b"}, {"only": ["x"]}),
        (["r.yaml"], {"WVO_AGENTS": "", "WVO_ONLY": "", "WVO_QUIET": ""}, {"agents": None, "only": [], "quiet": False}),
        (["r.yaml", "-q"], {"WVO_QUIET": "0"}, {"quiet": True}),
    ],
)
def test_each_form_reads_as_typer_reads_it(environ, argv, env, expected):
    args = parse(argv, environ(env))
    assert args is not None
    for name, value in expected.items():
        assert getattr(args, name) == value, name
    assert typed(vars(args)) == typed(typer_reading(argv))


@pytest.mark.parametrize("word, value", [(w, True) for w in ("1", "true", "YES", " on ", "t", "y")] + [
    (w, False) for w in ("0", "False", "no", "off", "f", "n", "  ")
])
def test_bool_env_words_as_typer_reads_them(environ, word, value):
    env = environ({"WVO_QUIET": word, "WVO_STRICT": word, "WVO_AUTOPILOT_ONCE": word})
    args = parse(["r.yaml"], env)
    assert args is not None and args.quiet is args.strict is args.once is value
    assert typed(vars(args)) == typed(typer_reading(["r.yaml"]))


def test_every_env_var_at_once(environ):
    env = {}
    for option in OPTIONS:
        if option.envvar:
            env[option.envvar] = {bool: "yes", int: "3", float: "0.25", str: "v", list: "a b"}[option.kind]
    args = parse(["r.yaml"], environ(env))
    assert args is not None and args.quiet is True and args.max_tasks == 3 and args.only == ["a", "b"]
    assert typed(vars(args)) == typed(typer_reading(["r.yaml"]))


@pytest.mark.parametrize(
    "argv, env",
    [
        (["r.yaml", "--bogus"], {}),
        (["r.yaml", "--agent", "3"], {}),  # no abbreviations
        (["--help"], {}),
        (["r.yaml", "-h"], {}),
        (["r.yaml", "-qj4"], {}),
        (["r.yaml", "-x"], {}),
        (["r.yaml", "--quiet=1"], {}),
        (["r.yaml", "--agents"], {}),
        (["r.yaml", "--agents", "-3"], {}),
        (["r.yaml", "--state-dir", "--json"], {}),
        (["r.yaml", "--retries", "many"], {}),
        (["r.yaml", "--retries", "1_000"], {}),
        (["r.yaml", "--retries="], {}),
        (["r.yaml", "--grace", "1e3"], {}),
        (["r.yaml"], {"WVO_QUIET": "maybe"}),
        (["r.yaml"], {"WVO_RETRIES": " 3"}),
        (["r.yaml"], {"WVO_GRACE": "inf"}),
    ],
)
def test_anything_unsure_is_left_to_typer(environ, argv, env):
    assert parse(argv, environ(env)) is None


def test_typer_reads_the_parameters_the_table_declares():
    import typer.main

    from runner.cli.typer_app import build_app

    command = typer.main.get_command(build_app(lambda args: 0))
    params = {p.name: p for p in command.params}
    assert list(params) == [ROADMAPS.name, *(option.name for option in OPTIONS)]
    roadmaps = params[ROADMAPS.name]
    assert (roadmaps.nargs, roadmaps.metavar, roadmaps.required) == (-1, ROADMAPS.metavar, False)
    for option in OPTIONS:
        p = params[option.name]
        declared = (list(option.flags), option.envvar, option.default, option.help)
        assert (p.opts, p.envvar, p.default, p.help) == declared, option.name
        assert (p.is_flag, p.multiple) == (option.kind is bool, option.kind is list), option.name
        assert p.secondary_opts == [], f"{option.name}: no --no- twin"


def test_echo_keeps_escape_codes_off_pipes_as_typer_echo_did(capsys):
    cli._echo("a\x1b[31mb\x1b[0m")
    cli._echo("half", err=True, nl=False)
    out, err = capsys.readouterr()
    assert (out, err) == ("ab\n", "half")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENVVARS and k != "_WVO_BATCH_COMPLETE"}


@pytest.mark.parametrize("extra", [["--check"], ["--agents", "1", "--quiet"]], ids=["check", "run"])
def test_the_ordinary_command_line_never_imports_typer(tmp_path, extra):
    roadmap = tmp_path / "one.yaml"
    roadmap.write_text('tasks: [{id: a, command: ["true"]}]\n')
    argv = [str(roadmap), *extra, "--state-dir", str(tmp_path / "s")]
    command = [sys.executable, "-X", "importtime", "-m", "runner", *argv]
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "runner.cli.command" in imported, "-X importtime listed nothing"
    assert not {m for m in imported if m.split(".")[0] in ("typer", "click", "pydantic", "pydantic_core")}


def test_help_is_typers_and_lists_every_option():
    r = wvo("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: wvo-batch [OPTIONS] [ROADMAP...]...")
    for option in OPTIONS:
        assert all(flag in r.stdout for flag in option.flags), option.name
        assert option.envvar is None or option.envvar in r.stdout, option.name


def test_an_unknown_option_is_typers_usage_error():
    r = wvo("r.yaml", "--bogus")
    assert r.returncode == 2
    assert r.stderr.startswith("Usage: wvo-batch [OPTIONS] [ROADMAP...]...")
    assert "No such option: --bogus" in r.stderr


def test_a_closed_stdout_ends_quietly_with_1_as_under_typer():
    read_end, write_end = os.pipe()
    os.close(read_end)  # `wvo-batch --schema | head -0`: the reader is gone before the first write
    command = [sys.executable, "-m", "runner", "--schema"]
    try:
        r = subprocess.run(
            command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=_clean_env(), cwd=ROOT
        )
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (1, "")
