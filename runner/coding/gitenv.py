"""A task's environment, built for it: nothing that points git at the caller's repository (invariant 7).

Every task, check, critic and landing check starts from `environment(os.environ)`: git's own list of
the variables it drops when it moves into another repository, and the rest of their class, are
removed. Identity, transport and tracing variables stay. The sealed worktree (runner.coding.sealed)
adds the rest of the seal: the fence file, the ceiling pinned to a worktree, the checks that a folder
is still ours.

A worktree task's own variables (its roadmap `env:`) go over that, and the ref guard's over them
(guarded): the task's GIT_CONFIG_* entries are kept, the guard's entry after them. What of its `env:`
would take its git out of the worktree or past the guard is refused before the run starts
(worktree_env_problem, asked by runner.manager.landing_queue.workspace_settings).

Kept apart from runner.coding.sealed, and importing nothing but `os`, because every agent needs it
before its first task, also in a run of plain commands: pathlib and typing alone cost an agent ~17 ms
of start-up (measured with `python -X importtime`), twenty agents a third of a second of CPU.
"""

import os

# What git itself unsets when it moves into another repository (`git rev-parse --local-env-vars`),
# and the rest of the class: the config's place and contents, the ref namespace, a hook's quarantine,
# where discovery may go.
REPO_VARIABLES = frozenset({
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR",
    "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM", "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_INDEX_VERSION",
})
REPO_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_INTERNAL_")
CEILING = "GIT_CEILING_DIRECTORIES"


def points_at_repository(name: str) -> bool:
    """True for a variable that tells git which repository, index, work tree, objects or config to use."""
    return name in REPO_VARIABLES or name.startswith(REPO_PREFIXES)


def environment(environ, worktree=None, guard=None) -> dict:
    """The environment for a task, its checks or its critic, built from the caller's.

    Identity (GIT_AUTHOR_*), transport (GIT_SSH_COMMAND, ...) and tracing variables stay: they say who
    the user is, not where git works. With `worktree`, git is pinned to it: the caller's
    GIT_CEILING_DIRECTORIES is replaced by the worktree's parent. Without one, the caller's stays (it
    can only stop git earlier). With `guard` (hooks folder, the worktree's git dir, the branch it may
    move or ''), the task's git runs the run's hooks (runner.coding.refguard): one config entry given
    through the environment, so nothing of the user's config is written.
    """
    env = {k: v for k, v in environ.items() if not points_at_repository(k)}
    if worktree is not None:
        env[CEILING] = os.path.dirname(os.path.abspath(worktree))
    if guard is not None:
        env.update(guard_variables(*guard))
    return env


def guard_variables(hooks, git_dir, branch: str, env=None) -> dict:
    """What makes a task's git run the run's hooks (runner.coding.refguard) in the worktree whose git dir is
    `git_dir`, moving no branch but `branch` ('' for none: a critic's detached worktree); to be put over `env`.

    env: the task's own variables (its roadmap `env:`). Its GIT_CONFIG_* entries are kept and ours is put after
    them, as entry n of n + 1: git reads the entries in order and the last value of core.hooksPath wins. A
    set that is not well formed (refused at load time: worktree_env_problem) is not kept: ours is entry 0.
    """
    n = config_count(env) if env else 0
    return {"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": "core.hooksPath", f"GIT_CONFIG_VALUE_{n}": str(hooks),
            "WVO_SEAL_GIT_DIR": str(git_dir), "WVO_SEAL_BRANCH": f"refs/heads/{branch}" if branch else ""}


def guarded(env: dict, hooks, git_dir, branch: str) -> dict:
    """env (a task's own variables) with the ref guard's over it, its own config entries kept (guard_variables)."""
    return {**env, **guard_variables(hooks, git_dir, branch, env)}


# --- what a worktree task's roadmap `env:` may set ---------------------------------------------------------

COUNT, KEY, VALUE = "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"
GUARD_PREFIX = "WVO_SEAL_"  # the guard's own settings: the branch and worktree it lets move
# Config files read below the environment's entries (git's "command" scope comes last): they cannot undo
# ours, and a task may want its own (GIT_CONFIG_GLOBAL=/dev/null for tests that must not see ~/.gitconfig).
LOWER_SCOPE_CONFIG = frozenset({"GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM"})


def config_count(env) -> int:
    """How many GIT_CONFIG_KEY_n/VALUE_n entries env gives git: its GIT_CONFIG_COUNT when the set is well
    formed (config_problem), else 0."""
    return int(env[COUNT]) if COUNT in env and config_problem(env) is None else 0


def config_problem(env) -> tuple[str, str] | None:
    """(the variable, what is wrong) when env's GIT_CONFIG_COUNT/KEY_n/VALUE_n set is not one git reads as
    written: a count that is not a number, a key or value missing, an entry past the count. None when fine."""
    entries = [k for k in env if k.startswith((KEY, VALUE))]
    if COUNT not in env:
        if entries:
            return entries[0], f"is set without {COUNT} (git ignores it); add {COUNT}: <the number of keys>"
        return None
    count = str(env[COUNT])
    if not (count.isascii() and count.isdigit()) or len(count) > 6:
        return COUNT, f"must be a whole number, the number of {KEY}n/{VALUE}n pairs; got {count!r}"
    n = int(count)
    for i in range(n):
        for name in (f"{KEY}{i}", f"{VALUE}{i}"):
            if name not in env:
                needs = f"{KEY}0 and {VALUE}0" if n == 1 else f"{KEY}0..{n - 1} and {VALUE}0..{n - 1}"
                return name, f"is missing: {COUNT} is {n}, so git needs {needs}"
        key = str(env[f"{KEY}{i}"])
        section, dot, name = key.rpartition(".")
        if not dot or not section or not name:
            return f"{KEY}{i}", f"must be a config key with its section, like safe.directory; got {key!r}"
    numbered = {f"{KEY}{i}" for i in range(n)} | {f"{VALUE}{i}" for i in range(n)}
    for name in entries:
        if name not in numbered:
            return name, f"is past {COUNT} ({n}): git ignores it; count it or remove it"
    return None


def worktree_env_problem(env) -> tuple[str, str] | None:
    """(the variable, why) for the first variable of a worktree task's own `env:` that would take its git out of
    its worktree or switch the ref guard off; None when there is none.

    Refused: what the caller's environment loses for every task (points_at_repository: GIT_DIR, GIT_WORK_TREE,
    GIT_INDEX_FILE, GIT_COMMON_DIR, the object store, GIT_CONFIG_PARAMETERS, which git reads after the
    environment's entries, ...), the guard's own WVO_SEAL_*, a GIT_CONFIG_* set git would not read as written,
    and core.hooksPath among its entries (the guard's hooks forward to the repository's own). Kept: the
    config entries (ours goes after them) and the config files of a lower scope (LOWER_SCOPE_CONFIG).
    """
    for name in env:
        if name.startswith(GUARD_PREFIX):
            return name, "is the run's ref guard's own setting (what the task's git may move); it cannot be set"
        if name == COUNT or name.startswith((KEY, VALUE)) or name in LOWER_SCOPE_CONFIG:
            continue
        if name == "GIT_CONFIG_PARAMETERS":
            return name, (f"is read by git after {COUNT}'s entries, so it would undo the run's ref guard; "
                          f"give config as {COUNT}, {KEY}n and {VALUE}n (kept, the guard's entry after them)")
        if points_at_repository(name):
            return name, ("points git at another repository, work tree, index, object store or config than its "
                          "worktree's: a worktree task cannot set it")
    problem = config_problem(env)
    if problem is not None:
        return problem
    for i in range(config_count(env)):
        if str(env[f"{KEY}{i}"]).lower() == "core.hookspath":
            return f"{KEY}{i}", ("sets core.hooksPath, which the run's ref guard sets for a worktree task; set it in "
                                 "the repository's config: the guard's hooks forward to the hooks it names")
    return None
