#!/usr/bin/env bash
# Fails, naming each, when a process the tests started is still running
# (issue 19). `.ci/run` runs it after the test command.
#
# Usage: tests/leaked-processes.sh [RUN_ID]
#
# A process is left behind when its environment holds
# - TRACELAKE_OWNER=<pid>:<start time>:<tag>, which the end-to-end tests
#   (tests/e2e/procs.rs) and the benchmark runner set on every process they
#   start, and that owner has exited; or
# - TRACELAKE_TEST_RUN=RUN_ID, given RUN_ID: `.ci/run` sets it for the test
#   command, so everything the tests start inherits it;
# and so is every other process in the group such a process leads
# (Chromium's zygote children overwrite their environment with their
# arguments, but stay in chromedriver's group).
#
# Processes get LEAK_GRACE_SECONDS (default 5) to exit first.
set -euo pipefail

run_id=${1-}
grace=${LEAK_GRACE_SECONDS:-5}
# This script and its subshells are not to carry the markers: their
# environment in /proc is the one this process was started with.
if [ -n "${TRACELAKE_TEST_RUN+set}${TRACELAKE_OWNER+set}" ]; then
  exec env -u TRACELAKE_TEST_RUN -u TRACELAKE_OWNER bash "$0" "$@"
fi
own_group=$(ps -o pgid= -p $$ | tr -d ' ')

# A numeric field of /proc/PID/stat, numbered as in proc(5); the command name
# (field 2) may hold spaces and parentheses.
stat_field() {
  local stat rest fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  read -ra fields <<<"$rest"
  echo "${fields[$(($2 - 3))]}"
}

# Prints the pids left behind, one a line.
leaked() {
  local line file value pid owner start pgid stat
  local -A found=()
  while IFS= read -r -d '' line; do
    file=${line%%:*}
    value=${line#*:}
    pid=${file#/proc/}
    pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    case $value in
      TRACELAKE_TEST_RUN=*)
        [ -n "$run_id" ] && [ "$value" = "TRACELAKE_TEST_RUN=$run_id" ] && found[$pid]=1
        ;;
      TRACELAKE_OWNER=*)
        IFS=: read -r owner start _ <<<"${value#TRACELAKE_OWNER=}"
        if [ "$(stat_field "$owner" 22 2>/dev/null)" != "$start" ]; then
          found[$pid]=1
        fi
        ;;
    esac
  done < <(grep -a -z -H -E '^TRACELAKE_(OWNER|TEST_RUN)=' /proc/[0-9]*/environ 2>/dev/null || true)
  # With the groups they lead (not this script's); zombies are not running.
  while read -r pid pgid stat; do
    [[ $stat == Z* ]] && continue
    if [ -n "${found[$pid]-}" ] || { [ "$pgid" != "$own_group" ] && [ -n "${found[$pgid]-}" ]; }; then
      echo "$pid"
    fi
  done < <(ps -e -o pid=,pgid=,stat=)
}

deadline=$((SECONDS + grace))
while :; do
  pids=$(leaked)
  [ -z "$pids" ] && exit 0
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 0.5
done

echo "error: $(wc -l <<<"$pids") process(es) started by the tests are still running:" >&2
ps -o pid,pgid,ppid,etime,args -p "$(tr '\n' ',' <<<"$pids" | sed 's/,$//')" >&2 || true
exit 1
