"""A complexity for tasks whose roadmap gives neither `complexity` nor `complexity_score`.

Real roadmaps (WeatherVane's) give neither, yet routing, `{complexity}`, the models table and the executor
timeouts all want one. The rule is deterministic and counts points (docs/roadmap.md shows it):

    words (by spaces) of title + description   < 25: 0 · 25-149: 1 · >= 150: 2
    dependencies                   0-1: 0  · 2-3: 1    · >= 4: 2
    exit criteria                  0-3: 0  · 4-6: 1    · >= 7: 2
    heavy words (title, first 40 words of the description), +1 per family found, at most 2:
        architecture · security · migration · refactor · concurrency · distributed · schema · infrastructure
    light words in the title (typo, docs, readme, rename, comment, lint, format, bump): -1
    the only task of its epic: +1

    points <= 1: simple · 2-3: moderate · >= 4: complex
"""

from __future__ import annotations

import re
from functools import cache

from runner.model import Complexity, Task

# family -> stems; a word counts when it starts with a stem (`refactoring`, `migrations`, `insecure` does not)
HEAVY = {
    "architecture": ("architect",),
    "security": ("security", "secure", "secret", "authent", "authoriz", "oauth", "permission", "vulnerab"),
    "migration": ("migrat",),
    "refactor": ("refactor", "rewrite", "redesign", "overhaul"),
    "concurrency": ("concurren", "parallel", "race", "deadlock", "thread"),
    "distributed": ("distributed", "cluster", "replica"),
    "schema": ("schema",),
    "infrastructure": ("infrastructure",),
}
LIGHT = ("typo", "doc", "docs", "readme", "rename", "comment", "comments", "lint", "format", "bump")
_LEAD_WORDS = 40  # heavy words count in the title and the description's first words, not in pasted templates
_FAMILY = {stem: family for family, stems in HEAVY.items() for stem in stems}


@cache
def _heavy() -> re.Pattern:
    """The heavy stems, longest first; compiled on the first task with text (a roadmap of bare commands has none)."""
    return re.compile(r"\b(" + "|".join(sorted(_FAMILY, key=len, reverse=True)) + ")")


@cache
def _light() -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(LIGHT) + r")\b")


_SHORT = 120  # characters: below it, a regex search beats the substring tests
# Enum members read once: Complexity.SIMPLE goes through a descriptor on every access (~0.1 s per 100k tasks).
_SIMPLE, _MODERATE, _COMPLEX = Complexity.SIMPLE, Complexity.MODERATE, Complexity.COMPLEX


def points(task: Task, epic_size: int | None = None) -> int:
    """The rule's points for one task; epic_size is how many tasks its epic has (None: no epic)."""
    deps = len(task.dependencies)
    score = 0 if deps < 2 else 1 if deps < 4 else 2
    crit = len(task.exit_criteria)
    if crit >= 4:
        score += 1 if crit < 7 else 2
    if task.title or task.description:  # a generated roadmap's tasks often have neither
        score += _text_points(task.title.lower(), task.description)
    if epic_size == 1:
        score += 1
    return score


def _text_points(title: str, description: str) -> int:
    """The points of a task's words: how many, the heavy ones (title, the description's lead), the light ones."""
    if description:
        lead = description.lower().split(None, _LEAD_WORDS)
        words = len(lead) if len(lead) <= _LEAD_WORDS else _LEAD_WORDS + len(lead[-1].split())
        text = f"{title} {' '.join(lead[:_LEAD_WORDS])}"
    else:
        words, text = 0, title
    n = len(title.split()) + words if title else words
    score = 0 if n < 25 else 1 if n < 150 else 2
    # Short text: one regex search is cheaper than 25 substring tests; long text: the reverse (memmem).
    if text and (_heavy().search(text) if len(text) < _SHORT else any(stem in text for stem in _FAMILY)):
        score += min(len({_FAMILY[m] for m in _heavy().findall(text)}), 2)
    if title and _light().search(title):
        score -= 1
    return score


def level(score: int) -> Complexity:
    return _SIMPLE if score <= 1 else _MODERATE if score <= 3 else _COMPLEX


def infer(tasks: list[Task]) -> list[Task]:
    """Give every task that has neither field an inferred complexity (task.complexity_inferred); returns them."""
    epic_size: dict[str, int] = {}
    for t in tasks:
        if t.epic is not None:
            epic_size[t.epic] = epic_size.get(t.epic, 0) + 1
    out = []
    for t in tasks:
        if t.complexity is None and t.complexity_score is None:
            score = points(t, epic_size.get(t.epic) if t.epic is not None else None)
            t.complexity = _SIMPLE if score <= 1 else _MODERATE if score <= 3 else _COMPLEX  # level(score)
            t.complexity_inferred = True
            out.append(t)
    return out
