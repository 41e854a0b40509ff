"""The command line: the only package that touches the terminal.

`command.main` is the `wvo-batch` entry point; `options` is the table of options and the fast parser
of an ordinary command line (typer is imported only for --help, usage errors and odd values, by
`typer_app`); `display` draws the live board and plain progress lines; `timeline` turns a run's
events into spans and series, from which `trace` writes the Chrome trace and `report` (its SVG
drawn by `charts`) the HTML report. `terminal.visible` spells out the control characters of
everything written to the terminal.

May import every other package. Imported by: `runner.__main__` and the console script.
"""
