"""A review leaves `into` and the task branch where it found them: checked before the critic starts and after it ends.

    before the review: the task branch is at the reviewed commit (else no review), `into`'s tip noted
    after the review:  the task branch is still at that commit       (else put back; the review fails)
                       `into` is its noted tip or a descendant of it (else put back when it only went
                       back; the review fails either way)

`into` moves forward during a review as other tasks land (merges on top of its tip): that is allowed.
Moving it back (`git update-ref refs/heads/<into> <older>`) would take landed tasks off it while they
are reported landed; a task branch moved by the critic would land work nobody reviewed. Both are put
back with a compare-and-swap (`update-ref <ref> <new> <old>`), so a concurrent write is never clobbered.
"""

from __future__ import annotations

from runner.manager.logs import Logger

log = Logger(__name__)


def before_review(spaces, branch: str, reviewed: str) -> str:
    """`into`'s tip as the review starts. Raises WorkspaceError when the task branch is not at the reviewed commit."""
    from runner.coding.workspace import WorkspaceError

    tip = tip_of(spaces, branch)
    if tip != reviewed:
        raise WorkspaceError(f"the task branch {branch} moved after its attempt was committed "
                             f"(at {(tip or 'nothing')[:10]}, not {reviewed[:10]}); not reviewed")
    into = tip_of(spaces, spaces.into)
    if into is None:
        raise WorkspaceError(f"branch {spaces.into!r} disappeared during the run")
    return into


def after_review(spaces, branch: str, reviewed: str, into_before: str | None) -> str:
    """Why the review cannot count ('' when both refs are where they may be); a ref moved back is put back."""
    problems = []
    tip = tip_of(spaces, branch)
    if tip != reviewed:
        if tip:
            _put_back(spaces, branch, reviewed, tip)
        problems.append(f"the task branch {branch} moved during the review (a critic must not change it); put back")
    if into_before is not None:
        into = tip_of(spaces, spaces.into)
        if into != into_before and not (into and _is_ancestor(spaces, into_before, into)):
            if into and _is_ancestor(spaces, into, into_before):
                _put_back(spaces, spaces.into, into_before, into)
                problems.append(f"{spaces.into} was moved back during the review (a critic must not change it); "
                                "put back")
            else:
                problems.append(f"{spaces.into} was rewritten during the review (it is not a descendant of "
                                f"{into_before[:10]} any more); left as it is")
    return "; ".join(problems)


def tip_of(spaces, branch: str) -> str | None:
    proc = spaces.git.run(spaces.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _is_ancestor(spaces, older: str, newer: str) -> bool:
    return spaces.git.ok(spaces.repo, "merge-base", "--is-ancestor", older, newer)


def _put_back(spaces, branch: str, to: str, now: str) -> None:
    proc = spaces.git.run(spaces.repo, "update-ref", "-m", "wvo-batch: undo a change made during a review",
                          f"refs/heads/{branch}", to, now, check=False)
    if proc.returncode != 0:
        log.warning("cannot put %s back to %s: %s", branch, to[:10], proc.stderr.strip())
