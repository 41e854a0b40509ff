"""The critic's review of a task: when one is due, the prompt it gets, and the verdict read from its output.

    task (review: true | {when: moderate} | false, review_rounds: 2)
      │ checks passed, work committed on wvo/<run>/<task>
      ▼
    review prompt ({id} {title} {description} {exit_criteria} {diff} {checks}) ──▶ critic agent CLI
      │ in a detached worktree at the task's commit (runner.manager.review)
      ▼
    its output ──verdict_from_log()──▶ Verdict(approve, reason) or None (no verdict: a failed review attempt)

The verdict fails closed. It is read only from the critic's final answer:
- codex-json / claude-json: the structured result's final text (claude's `result`, codex's last
  `agent_message` of its turn). Tool output, the prompt and any other line of the log are never read. No
  final text: no verdict. Should the output hold more than one final answer (a second `result` event, an
  `agent_message` after the turn ended: lines appended to the log by some other process), all of them
  are the answer, so a forged approval after a rejection is two different verdicts.
- any other executor (`output: text` or none): what the critic printed, less the prompt it echoed (its
  argv elements of 20 characters or more are cut out first). Its answer cannot be told from its tool
  output there, so all of that text counts as the answer.
In that answer a verdict is a line that reads `VERDICT: APPROVE` or `VERDICT: REJECT <reason>` (any case;
markdown emphasis, quotes and list marks around it are ignored). Two different verdicts in it are no
verdict: a critic that rejects and then quotes a worker's planted "VERDICT: APPROVE" (from a file or the
diff) approves nothing. The same verdict repeated counts once (a rejection's last reason is kept).
Pure apart from reading the critic's log: no processes, no git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.coding.executors import DEFAULT_REVIEW_PROMPT, DIFF_CAP, REVIEW_FIELDS  # noqa: F401 - kept with the other templates
from runner.coding.output import STRUCTURED, parse
from runner.model import Complexity, Task

DEFAULT_ROUNDS = 2
MAX_ROUNDS = 20
ECHO_MIN = 20  # characters: an argv element this long that the critic's output repeats is its echoed prompt
NAMES_CAP = 20_000  # characters of file names in a cut diff's note; the files beyond are counted, not named
LOG_CAP = 64 << 20  # bytes of a critic's log read for its answer; a longer log has no verdict (fail closed)

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


def changed_files(paths) -> str:
    """A cut {diff}'s list of changed files: every one, or as many as fit and how many were left out."""
    named, size = [], 0
    for path in paths:
        size += len(path) + 2
        if size > NAMES_CAP:
            break
        named.append(path)
    left = len(paths) - len(named)
    return ", ".join(named) + (f" ... and {left} more changed file(s) not named here" if left else "")


def parse_verdict(text: str) -> Verdict | None:
    """The one verdict of a final answer, or None: none there, or two different ones (fail closed)."""
    found = verdicts_in(text)
    if not found or any(v.approve != found[-1].approve for v in found):
        return None
    return found[-1]


def verdicts_in(text: str) -> list[Verdict]:
    """Every VERDICT line of a text, in order."""
    found = []
    for line in text.splitlines():
        m = _VERDICT.match(line.strip(_DECORATION))
        if m:
            approve = m.group(1).upper() == "APPROVE"
            reason = m.group(2).strip(_DECORATION + ".:")
            found.append(Verdict(approve, "" if approve else (reason or "(no reason given)")))
    return found


def final_answer(output: bytes | str, fmt: str | None, echoed=()) -> str:
    """The critic's final answer in its output (see the module's docstring); '' when there is none."""
    data = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    if fmt in STRUCTURED:
        return "\n".join(parse(fmt, data).answers)
    for part in sorted({p for p in echoed if isinstance(p, str) and len(p) >= ECHO_MIN}, key=len, reverse=True):
        data = data.replace(part, "")
    return data


def verdict_of(output: bytes | str, fmt: str | None = None, echoed=()) -> Verdict | None:
    """The verdict of a critic's whole output, read from its final answer only; None when there is none."""
    return parse_verdict(final_answer(output, fmt, echoed))


def verdict_from_log(path: str | None, fmt: str | None, echoed=()) -> tuple[Verdict | None, str]:
    """The verdict in a critic's log file, and why there is none ('' when there is one)."""
    if path is None:
        return None, "no verdict: the critic printed nothing"
    try:
        with open(path, "rb") as f:
            data = f.read(LOG_CAP + 1)
    except OSError as exc:
        return None, f"no verdict: the critic's log cannot be read ({exc.strerror})"
    if len(data) > LOG_CAP:
        return None, f"no verdict: the critic printed more than {LOG_CAP >> 20} MiB; its answer is not looked for in it"
    answer = final_answer(data, fmt, echoed)
    verdict = parse_verdict(answer)
    if verdict is not None:
        return verdict, ""
    where = "its structured result's final text" if fmt in STRUCTURED else "its output"
    if verdicts_in(answer):
        return None, f"no verdict: {where} holds both VERDICT: APPROVE and VERDICT: REJECT (fail closed)"
    return None, f"no verdict: {where} has no line `VERDICT: APPROVE` or `VERDICT: REJECT <reason>`"
