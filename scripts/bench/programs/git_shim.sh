#!/bin/bash
# A `git` first on PATH that logs each call (subcommand, start, end) to $WVO_BENCH_GIT_LOG and runs the real one.
t0=$EPOCHREALTIME
"$WVO_BENCH_REAL_GIT" "$@"
rc=$?
sub=""; skip=0
for a in "$@"; do
  if (( skip )); then skip=0; continue; fi
  case $a in -C|-c) skip=1 ;; -*) ;; *) sub=$a; break ;; esac
done
echo "$sub $t0 $EPOCHREALTIME" >> "$WVO_BENCH_GIT_LOG"
exit $rc
