#!/bin/bash
# The floor of workload 11: the same git work as a worktree run with a speculative landing queue, in plain bash,
# AGENTS tasks at once. Per task: a worktree on a new branch at into's tip (registered under a lock, as git needs:
# concurrent `worktree add`s fail; checked out outside it), the work (sleep), one file edited, add + commit, the
# check (sleep), the worktree removed; then its landing: merged (merge-tree + commit-tree, under a lock, on top of
# the merge of the task before it), checked out in a landing worktree of its own, checked (sleep), and into moved
# by compare-and-swap once the task before it has landed (a chain of flocks: no polling). No ledger, no logs, no agents, no failure handling.
# Prints "started T" when a task's work begins and "landed T" when into moves (epoch seconds).
# Usage: landing_floor.sh REPO SCRATCH INTO FILES N AGENTS WORK_S CHECK_S
set -e
R=$1; S=$2; INTO=$3; FILES=$4; N=$5; AGENTS=$6; WORK=$7; CHECK=$8
D=$(( FILES < 100 ? FILES : 100 ))
export R S INTO FILES N WORK CHECK D
g() { git -c core.hooksPath=/dev/null -c gc.auto=0 "$@"; }
export -f g
g -C "$R" branch "$INTO" main
g -C "$R" rev-parse "refs/heads/$INTO" > "$S/spec"  # what the last merged task leaves on into
echo 0 > "$S/seq"
task() {
  i=$1
  tip=$(g -C "$R" rev-parse "refs/heads/$INTO")
  flock "$S/wt.lock" git -C "$R" worktree add -q --no-checkout -b "$INTO-t$i" "$S/wt$i" "$tip"
  g -C "$S/wt$i" reset -q --hard "$tip"
  echo "started $EPOCHREALTIME"
  sleep "$WORK"
  (cd "$S/wt$i" && sh -c "echo changed by task $i > d$((i % D))/f$((i % FILES)).txt")
  g -C "$S/wt$i" add -A
  g -C "$S/wt$i" commit -q -m "t$i"
  (cd "$S/wt$i" && sleep "$CHECK")
  flock "$S/wt.lock" git -C "$R" worktree remove --force --force "$S/wt$i"
  land "$i" &  # handed over: the agent is free
}
land() {
  i=$1
  exec 9>"$S/merge.lock"; flock 9  # merged on top of the task ahead, in order of hand-over
  base=$(cat "$S/spec"); k=$(cat "$S/seq"); echo $((k + 1)) > "$S/seq"
  exec 8>"$S/turn$k"; flock 8  # held until this one has landed: the one behind waits on it
  tree=$(g -C "$R" merge-tree --write-tree "$base" "$INTO-t$i")
  m=$(g -C "$R" commit-tree "$tree" -p "$base" -p "$INTO-t$i" -m "Land t$i")
  echo "$m" > "$S/spec"
  exec 9>&-
  flock "$S/wt.lock" git -C "$R" worktree add -q --no-checkout --detach "$S/land$i" "$m"
  g -C "$S/land$i" reset -q --hard "$m"
  (cd "$S/land$i" && sleep "$CHECK")
  if ((k > 0)); then flock "$S/turn$((k - 1))" true; fi  # the one ahead has landed
  g -C "$R" update-ref "refs/heads/$INTO" "$m" "$base"
  echo "landed $EPOCHREALTIME"
  touch "$S/landed$i"
  exec 8>&-
}
export -f task land
seq 0 $((N - 1)) | xargs -P "$AGENTS" -I{} bash -c 'task {}'
for ((i = 0; i < N; i++)); do until [ -e "$S/landed$i" ]; do sleep 0.01; done; done
for ((i = 0; i < N; i++)); do g -C "$R" worktree remove --force --force "$S/land$i"; done
g -C "$R" branch -q -D $(g -C "$R" for-each-ref --format='%(refname:short)' "refs/heads/$INTO-t*")
