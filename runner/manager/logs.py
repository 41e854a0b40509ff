"""A module's logger, made on its first record: a run that logs nothing does not import `logging`.

`logging` brings `traceback`, `linecache`, `tokenize`, `textwrap`, `string`, `threading` and `warnings`
with it: ~5 ms of every start-up (`python -X importtime`), for warnings that a good run never writes.
`Logger(__name__)` stands where `logging.getLogger(__name__)` stood; the first record imports `logging`
and goes to the same `logging.Logger`, so handlers, levels and pytest's caplog see it as before.
"""

from __future__ import annotations


class Logger:
    __slots__ = ("name", "_logger")

    def __init__(self, name: str):
        self.name = name
        self._logger = None

    @property
    def logger(self):
        if self._logger is None:
            import logging

            self._logger = logging.getLogger(self.name)
        return self._logger

    def debug(self, msg, *args, **kwargs) -> None:
        self.logger.debug(msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs) -> None:
        self.logger.info(msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs) -> None:
        self.logger.warning(msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs) -> None:
        self.logger.error(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs) -> None:
        self.logger.exception(msg, *args, **kwargs)
