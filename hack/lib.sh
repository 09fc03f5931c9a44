# Shared by the scripts in hack/ (source it): waits that poll with a
# deadline and say what they waited for and what they last saw, and the
# progress of a long build.

# wait_until DESCRIPTION TIMEOUT_SECONDS COMMAND...
# Runs COMMAND every half second until it succeeds. On timeout, prints the
# description and COMMAND's last output (stdout and stderr) and returns 1.
# COMMAND exiting with 42 means it will never succeed: no more waiting.
wait_until() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$(($(date +%s) + timeout)) last code
  while true; do
    code=0
    last=$("$@" 2>&1) || code=$?
    if [ "$code" = 0 ]; then
      return 0
    fi
    if [ "$code" = 42 ]; then
      echo "gave up waiting for $what: ${last:-<no output>}" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out after ${timeout}s waiting for $what; last seen: ${last:-<no output>}" >&2
      return 1
    fi
    sleep 0.5
  done
}

# crd_established KUBECTL... -- NAME
# Succeeds when the CRD's Established condition is True. A CRD the API
# server has just created has no status yet: that is "not yet", not an
# error (kubectl wait fails on it).
crd_established() {
  local args=() name
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  name=$2
  local status
  status=$("${args[@]}" get crd "$name" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}') || return 1
  if [ "$status" = True ]; then return 0; fi
  echo "crd/$name Established=${status:-<no status yet>}"
  return 1
}

# run_logged WHAT EXPECTED COMMAND...: runs COMMAND with its output (the
# `go: downloading` lines, compiler output) in a log file under
# $cache/logs, and says every 30 s what is being built and for how long,
# against the EXPECTED time. The caller defines `cache`, `log` and `die`.
run_logged() {
  local what=$1 expected=$2
  shift 2
  mkdir -p "$cache/logs"
  local logfile=$cache/logs/build-${what// /-}.log
  log "building $what (expected: $expected; full log: $logfile)"
  local began=$SECONDS
  "$@" >"$logfile" 2>&1 &
  local pid=$! ticks=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    if [ $((ticks % 30)) = 0 ]; then
      local t=$((SECONDS - began))
      log "  $what: $((t / 60))m$((t % 60))s so far (expected: $expected)"
    fi
  done
  if ! wait "$pid"; then
    tail -n 20 "$logfile" >&2
    die "building $what failed after $((SECONDS - began))s (full log: $logfile)"
  fi
  log "  $what: done in $((SECONDS - began))s"
}
