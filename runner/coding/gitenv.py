"""A task's environment, built for it: nothing that points git at the caller's repository (invariant 7).

Every task, check, critic and landing check starts from `environment(os.environ)`: git's own list of
the variables it drops when it moves into another repository, and the rest of their class, are
removed. Identity, transport and tracing variables stay. The sealed worktree (runner.coding.sealed)
adds the rest of the seal: the fence file, the ceiling pinned to a worktree, the checks that a folder
is still ours.

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


def guard_variables(hooks, git_dir, branch: str) -> dict:
    """What makes a task's git run the run's hooks (runner.coding.refguard) in the worktree whose git dir is
    `git_dir`, moving no branch but `branch` ('' for none: a critic's detached worktree)."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": str(hooks),
            "WVO_SEAL_GIT_DIR": str(git_dir), "WVO_SEAL_BRANCH": f"refs/heads/{branch}" if branch else ""}
