#!/bin/bash
# The same git commands as a worktree run, serially, as a user would script them: per task a worktree on a new
# branch at into's tip, the task (the same `sh -c` command line), add + commit, a --no-ff merge in a landing
# worktree, into moved by compare-and-swap, the worktree removed; at the end the landed branches deleted.
# Usage: worktree_tasks.sh REPO SCRATCH INTO FILES N
set -e
R=$1; S=$2; INTO=$3; FILES=$4; N=$5
D=$(( FILES < 100 ? FILES : 100 ))
g() { git -c core.hooksPath=/dev/null -c gc.auto=0 "$@"; }
g -C "$R" branch "$INTO" main
g -C "$R" worktree add -q --detach "$S/landing" "$INTO"
for ((i = 0; i < N; i++)); do
  tip=$(g -C "$R" rev-parse "refs/heads/$INTO")
  g -C "$R" worktree add -q -b "$INTO-t$i" "$S/wt$i" "$tip"
  (cd "$S/wt$i" && sh -c "echo changed by task $i > d$((i % D))/f$((i % FILES)).txt")
  g -C "$S/wt$i" add -A
  g -C "$S/wt$i" commit -q -m "t$i"
  g -C "$S/landing" merge -q --no-ff -m "Land t$i" "$INTO-t$i"
  g -C "$R" update-ref "refs/heads/$INTO" "$(g -C "$S/landing" rev-parse HEAD)" "$tip"
  g -C "$R" worktree remove --force "$S/wt$i"
done
g -C "$R" worktree remove --force "$S/landing"
g -C "$R" branch -q -D $(g -C "$R" for-each-ref --format='%(refname:short)' "refs/heads/$INTO-t*")
