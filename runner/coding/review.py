"""The critic's review of a task: when one is due, the prompt it gets, and the verdict read from its output.

    task (review: true | {when: moderate} | false, review_rounds: 2)
      │ checks passed, work committed on wvo/<run>/<task>
      ▼
    review prompt ({id} {title} {description} {exit_criteria} {diff} {checks}) ──▶ critic agent CLI
      │ in a detached worktree at the task's commit (runner.manager.review)
      ▼
    its stdout+stderr, through a pipe the agent reads (runner.agents.execute) ──▶ its final answer, carried
      │ back in TaskResult.answer: read from what the critic itself printed, never from its log file, which
      ▼ any process of the run could write
    verdict_of_answer() ──▶ Verdict(approve, reason) or None (no verdict: a failed review attempt)

The verdict fails closed. It is read only from the critic's final answer:
- codex-json / claude-json: the structured result's final text (claude's `result`, codex's last
  `agent_message` of its turn). Tool output, the prompt and any other line of the output are never read.
  No final text: no verdict. Should the output hold more than one final answer (a second `result` event,
  an `agent_message` after the turn ended), all of them are the answer, so an approval after a
  rejection is two different verdicts.
- any other executor (`output: text` or none): what the critic printed, less the prompt it echoed (its
  argv elements of 20 characters or more are cut out first). Its answer cannot be told from its tool
  output there, so all of that text counts as the answer.
The answer that crosses back is bounded (ANSWER_CAP, its last bytes): the verdict lines of what was cut
from its front go with it (AnswerReader), so a cut never turns two verdicts into one.
In that answer a verdict is a line that reads `VERDICT: APPROVE` or `VERDICT: REJECT <reason>` (any case;
markdown emphasis, quotes and list marks around it are ignored). Two different verdicts in it are no
verdict: a critic that rejects and then quotes a worker's planted "VERDICT: APPROVE" (from a file or the
diff) approves nothing. The same verdict repeated counts once (a rejection's last reason is kept).
Pure: no processes, no git, no files.
"""

from __future__ import annotations

import re

from runner.coding.executors import DEFAULT_REVIEW_PROMPT, DIFF_CAP, REVIEW_FIELDS  # noqa: F401 - kept with the other templates
from runner.coding.output import STRUCTURED, parse
from runner.model import record, Complexity, Task

DEFAULT_ROUNDS = 2
MAX_ROUNDS = 20
ECHO_MIN = 20  # characters: an argv element this long that the critic's output repeats is its echoed prompt
NAMES_CAP = 20_000  # characters of file names in a cut diff's note; the files beyond are counted, not named
ANSWER_CAP = 256 << 10  # bytes of a critic's answer carried back to the manager: the last ones

_VERDICT = re.compile(r"^VERDICT\s*:\s*(APPROVE|REJECT)\b[\s:.\-]*(.*)$", re.IGNORECASE)
_DECORATION = " \t*_`>#-"
_LEVEL = {Complexity.SIMPLE.value: 1, Complexity.MODERATE.value: 2, Complexity.COMPLEX.value: 3}


@record(frozen=True)
class Verdict:
    approve: bool
    reason: str = ""  # a rejection's reason ('' for an approval)


@record(frozen=True)
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


def verdict_of_answer(answer: str | None, fmt: str | None) -> tuple[Verdict | None, str]:
    """The verdict in a critic's final answer as its agent read it (TaskResult.answer), and why there is
    none ('' when there is one)."""
    if answer is None:
        return None, "no verdict: the critic's answer was not read from its output"
    verdict = parse_verdict(answer)
    if verdict is not None:
        return verdict, ""
    where = "its structured result's final text" if fmt in STRUCTURED else "its output"
    if verdicts_in(answer):
        return None, f"no verdict: {where} holds both VERDICT: APPROVE and VERDICT: REJECT (fail closed)"
    return None, f"no verdict: {where} has no line `VERDICT: APPROVE` or `VERDICT: REJECT <reason>`"


class AnswerReader:
    """A critic's answer read as it is printed: the last `cap` bytes, less the prompt it echoed, and the
    verdict lines of what fell out of them (at most one of each kind: enough to fail closed).

    Fed in chunks cut anywhere: an echo cut across two chunks is still taken out (the last bytes, as many
    as the longest echoed element, wait for the next chunk before they count).
    """

    def __init__(self, echoed=(), cap: int = ANSWER_CAP):
        self._parts = sorted({p.encode("utf-8", "surrogateescape") for p in echoed if isinstance(p, str) and len(p) >= ECHO_MIN},
                             key=len, reverse=True)  # fmt: skip
        self._hold = max(map(len, self._parts), default=1) - 1  # bytes an echo's start may be behind the end
        self._cap = cap
        self._pending = b""  # read, not yet cleared of echoes
        self._kept = bytearray()  # cleared of echoes, the last of it kept (up to 2 * cap between trims)
        self._cut = 0  # bytes dropped from the front of _kept
        self._mid_line = False  # _kept starts inside a line whose start was dropped
        self._dropped: dict[bool, Verdict] = {}  # approve? -> the last such verdict line among the dropped bytes

    def feed(self, data: bytes) -> None:
        buf = self._pending + data
        for part in self._parts:
            buf = buf.replace(part, b"")
        # an echo that starts before `safe` lies whole in buf, so it is gone already
        safe = len(buf) - self._hold
        end = buf.rfind(b"\n", 0, max(0, safe)) + 1  # whole lines, so an echo is cut out before it counts
        if end == 0 and safe > self._cap:  # one line longer than the cap: taken as it comes
            end = safe
        self._take(buf[:end])
        self._pending = buf[end:]

    def text(self) -> str:
        """Everything fed so far (a last line without its newline included): the answer to read."""
        self._take(self._pending, trim_to=self._cap)
        self._pending = b""
        kept = bytes(self._kept)
        if self._mid_line:
            kept = kept[kept.find(b"\n") + 1 :] if b"\n" in kept else b""
        text = kept.decode("utf-8", "replace")
        if not self._cut:
            return text
        lines = [f"VERDICT: {'APPROVE' if v.approve else 'REJECT ' + v.reason}" for v in self._dropped.values()]
        note = f"[wvo-batch: the first {self._cut} bytes of the answer are not kept; their verdict lines follow]"
        return "\n".join([note, *lines, "[wvo-batch: the last bytes of the answer]", text])

    def _take(self, data: bytes, trim_to: int | None = None) -> None:
        self._kept += data
        limit = 2 * self._cap if trim_to is None else trim_to
        if len(self._kept) <= limit:
            return
        start = len(self._kept) - self._cap
        newline = self._kept.find(b"\n", start - 1)
        end = start if newline < 0 else newline + 1  # whole lines dropped, unless no line ends in the rest
        dropped = bytes(self._kept[:end])
        del self._kept[:end]
        self._cut += end
        lines = dropped.split(b"\n")
        if self._mid_line:
            lines = lines[1:]  # the rest of a line whose start was read before
        self._mid_line = not dropped.endswith(b"\n")
        for v in verdicts_in(b"\n".join(lines).decode("utf-8", "replace")):
            self._dropped.pop(v.approve, None)
            self._dropped[v.approve] = v


def bounded_answer(text: str, cap: int = ANSWER_CAP) -> str:
    """A final answer cut to its last `cap` bytes, the verdict lines of the rest kept (AnswerReader)."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= cap:
        return text
    reader = AnswerReader((), cap)
    reader.feed(data)
    return reader.text()
