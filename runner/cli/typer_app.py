"""typer's reading of the command line, built from the table in runner.cli.options: --help, usage errors, odd values.

Only imported when runner.cli.options.parse is not sure of a command line: typer takes 100-250 ms to import.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Callable, List, Optional

import typer

from runner.cli.options import COMMAND_HELP, OPTIONS, ROADMAPS, Param


def build_app(command: Callable[[SimpleNamespace], int]) -> typer.Typer:
    """A one-command typer app that reads every parameter of the table and exits with `command(args)`."""
    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def main_command(context: typer.Context, **values) -> None:
        for param in (ROADMAPS, *OPTIONS):
            if param.kind is list:  # typer gives None or () for none; the command always gets a list
                values[param.name] = list(values[param.name] or [])
        # which values came from a WVO_* variable: a flag beats one (runner.cli.command._combinations)
        from_env = {o.name for o in OPTIONS if getattr(context.get_parameter_source(o.name), "name", "") == "ENVIRONMENT"}
        raise typer.Exit(command(SimpleNamespace(**values, from_env=from_env)))

    # typer reads a command's parameters from its signature: give it one made from the table.
    parameters = [inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
                  _parameter(ROADMAPS, typer.Argument(None, metavar=ROADMAPS.metavar, help=ROADMAPS.help))]
    for option in OPTIONS:
        info = typer.Option(option.default, *option.flags, envvar=option.envvar, help=option.help)
        parameters.append(_parameter(option, info))
    main_command.__signature__ = inspect.Signature(parameters)
    main_command.__annotations__ = {p.name: p.annotation for p in parameters}
    app.command(help=COMMAND_HELP)(main_command)
    return app


def _parameter(param: Param, info) -> inspect.Parameter:
    kind = List[str] if param.kind is list else param.kind
    annotation = kind if param.default is not None else Optional[kind]
    return inspect.Parameter(param.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
