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

from runner.coding.executors import DEFAULT_REVIEW_PROMPT, DIFF_CAP, REVIEW_FIELDS  # noqa: F401 - kept with the other templates
from runner.model import Complexity, Task

DEFAULT_ROUNDS = 2
MAX_ROUNDS = 20

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
