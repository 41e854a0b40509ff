#!/bin/bash
# Worktree tasks done by hand, serially, each step timed: per task `git worktree add -b` at into's tip, the task
# (the same `sh -c` command line as the roadmap's), `add -A` + `commit`, a --no-ff merge in a landing worktree and
# into moved by compare-and-swap, `worktree remove --force`. Prints one line per step and task: "<step> <microseconds>",
# and once, after the first add, the disk a live worktree takes: "disk_kb <checkout> <admin dir, index included>".
# Usage: worktree_steps.sh REPO SCRATCH INTO FILES N
set -e
R=$1; S=$2; INTO=$3; FILES=$4; N=$5
D=$(( FILES < 100 ? FILES : 100 ))
g() { git -c core.hooksPath=/dev/null -c gc.auto=0 "$@"; }
since() { echo "$1 $(( ${EPOCHREALTIME/./} - $2 ))"; }  # microseconds since $2
g -C "$R" branch "$INTO" main
g -C "$R" worktree add -q --detach "$S/landing" "$INTO"
for ((i = 0; i < N; i++)); do
  tip=$(g -C "$R" rev-parse "refs/heads/$INTO")
  t=${EPOCHREALTIME/./}
  g -C "$R" worktree add -q -b "$INTO-t$i" "$S/wt$i" "$tip"
  since add "$t"
  if ((i == 0)); then
    admin=$(g -C "$S/wt$i" rev-parse --absolute-git-dir)
    echo "disk_kb $(du -sk --exclude=.git "$S/wt$i" | cut -f1) $(du -sk "$admin" | cut -f1)"
  fi
  (cd "$S/wt$i" && sh -c "echo changed by task $i > d$((i % D))/f$((i % FILES)).txt")
  t=${EPOCHREALTIME/./}
  g -C "$S/wt$i" add -A
  g -C "$S/wt$i" commit -q -m "t$i"
  since commit "$t"
  t=${EPOCHREALTIME/./}
  g -C "$S/landing" merge -q --no-ff -m "Land t$i" "$INTO-t$i"
  g -C "$R" update-ref "refs/heads/$INTO" "$(g -C "$S/landing" rev-parse HEAD)" "$tip"
  since land "$t"
  t=${EPOCHREALTIME/./}
  g -C "$R" worktree remove --force "$S/wt$i"
  since remove "$t"
done
g -C "$R" worktree remove --force "$S/landing"
g -C "$R" branch -q -D $(g -C "$R" for-each-ref --format='%(refname:short)' "refs/heads/$INTO-t*")
