"""The critic's review of a task: when one is due, the prompt it gets, and the verdict read from its output.

    task (review: true | {when: moderate} | false, review_rounds: 2)
      │ checks passed, work committed on wvo/<run>/<task>
      ▼
    review prompt ({id} {title} {description} {exit_criteria} {diff} {checks}) ──▶ critic agent CLI
      │ in a detached worktree at the task's commit (runner.manager.review)
      ▼
    its output ──verdict_of()──▶ Verdict(approve, reason) or None (no verdict: a failed review attempt)

The verdict is the last line that reads `VERDICT: APPROVE` or `VERDICT: REJECT <reason>` (any case;
markdown emphasis, quotes and list marks around it are ignored). When the output holds a CLI's
structured result (claude --output-format json, codex --json), its final text is read instead of the
raw lines. Pure: no processes, no git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.model import Complexity, Task

# At most this many bytes of the task's diff go into {diff}; the default prompt says so.
DIFF_CAP = 60_000
DEFAULT_ROUNDS = 2
MAX_ROUNDS = 20

DEFAULT_REVIEW_PROMPT = (
    "You are the critic. Review the work done for task {id}: {title}\n\n{description}\n\n"
    "Exit criteria:\n{exit_criteria}\n\n"
    "These checks ran on it and passed:\n{checks}\n\n"
    f"The change, as a diff against the commit the task started from (at most {DIFF_CAP} bytes; a longer diff "
    "is cut and ends with a note listing every changed file). The current directory is a read-only copy of "
    "the result: read files there if the diff is not enough, but change nothing.\n\n{diff}\n\n"
    "Decide whether the change meets every exit criterion and is correct. End your answer with exactly one "
    "line, either\nVERDICT: APPROVE\nor\nVERDICT: REJECT <what must change, in one line>"
)

# Fields a review prompt may use beyond the executor's (runner.coding.executors.FIELDS).
REVIEW_FIELDS = {
    "diff": f"the task branch against its start commit (at most {DIFF_CAP} bytes; says so when cut)",
    "checks": "the checks that ran and passed, one '- ' line each ('- none' when the task has none)",
}

_VERDICT = re.compile(r"^VERDICT\s*:\s*(APPROVE|REJECT)\b[\s:.\-]*(.*)$", re.IGNORECASE)
_DECORATION = " \t*_`>#-"
_LEVEL = {Complexity.SIMPLE.value: 1, Complexity.MODERATE.value: 2, Complexity.COMPLEX.value: 3}


@dataclass(frozen=True)
class Verdict:
    approve: bool
    reason: str = ""  # a rejection's reason ('' for an approval)


@dataclass(frozen=True)
class Policy:
    """Whether a task is reviewed: always (when=None), or from a complexity up; and how many rejections end it."""

    when: str | None = None  # None: every task; else simple / moderate / complex, the least reviewed
    rounds: int = DEFAULT_ROUNDS


def parse_policy(review, rounds, problems: list, where: str = "") -> Policy | None:
    """`review:` and `review_rounds:` as written -> a Policy, or None (not reviewed); problems appended."""
    if rounds is not None and (type(rounds) is not int or not 1 <= rounds <= MAX_ROUNDS):
        problems.append(f"`{where}review_rounds` must be a whole number from 1 to {MAX_ROUNDS}; got {rounds!r}")
        rounds = None
    n = DEFAULT_ROUNDS if rounds is None else rounds
    if review is None or review is False:
        return None
    if review is True:
        return Policy(None, n)
    if isinstance(review, dict):
        unknown = [k for k in review if k != "when"]
        when = review.get("when")
        if unknown or not isinstance(when, str) or when.strip().lower() not in _LEVEL:
            problems.append(
                f"`{where}review` must be true, false or {{when: simple|moderate|complex}}; got {review!r}"
            )
            return None
        return Policy(when.strip().lower(), n)
    problems.append(f"`{where}review` must be true, false or {{when: simple|moderate|complex}}; got {review!r}")
    return None


def needs_review(task: Task, policy: Policy | None, complexity: str) -> bool:
    """Whether the task's work goes to a critic. A task of unknown complexity is reviewed (fail closed)."""
    if policy is None:
        return False
    if policy.when is None or not complexity:
        return True
    return _LEVEL.get(complexity, 3) >= _LEVEL[policy.when]


def checks_text(checks) -> str:
    """{checks}: one line per check that ran, with its exit code."""
    lines = [f"- {cmd} (exit {code})" for cmd, code in checks or ()]
    return "\n".join(lines) or "- none"


def parse_verdict(text: str) -> Verdict | None:
    """The last VERDICT line of a text, or None."""
    found = None
    for line in text.splitlines():
        m = _VERDICT.match(line.strip(_DECORATION))
        if m:
            approve = m.group(1).upper() == "APPROVE"
            reason = m.group(2).strip(_DECORATION + ".:")
            found = Verdict(approve, "" if approve else (reason or "(no reason given)"))
    return found


def verdict_of(output: bytes | str) -> Verdict | None:
    """The verdict in an attempt's output: a CLI's structured final text when there is one, else its lines."""
    from runner.coding.output import parse

    data = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    if '"type"' in data:  # maybe JSON events: a structured result's final text is the agent's answer
        for fmt in ("claude-json", "codex-json"):
            final = parse(fmt, data).final_text
            if final:
                verdict = parse_verdict(final)
                if verdict is not None:
                    return verdict
    return parse_verdict(data)
