# Shell helpers shared by the recipes (sourced, not run): icefall-style logging, --help from the
# script's header, stage markers, and the repository's virtual environment.
#
# The sourcing script sets `root` (the repository), and `stage`, `stop_stage`, `exp_dir` before
# it calls run_stage/done_stage.

# log MSG...: time, file:line of the caller (of the caller's caller with _up=1), message.
log() {
  local up=${_up:-0}
  echo "$(date '+%Y-%m-%d %H:%M:%S') (${BASH_SOURCE[up + 1]##*/}:${BASH_LINENO[up]}) $*" >&2
}

# die MSG...: log an error at the caller's file:line and exit 1.
die() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) error: $*" >&2
  exit 1
}

# usage: the running script's header comment (line 2 up to `set -euo`), without the '#'.
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

stage_start=0
# run_stage N [always]: true when stage N is selected and (unless "always") not yet done.
run_stage() {
  local n=$1
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ "${2:-}" != always ] && [ -f "$exp_dir/.stage$n.done" ]; then
    local secs
    secs=$(cat "$exp_dir/.stage$n.done")
    _up=1 log "Stage $n: already done ($exp_dir/.stage$n.done${secs:+, $secs s}), skipping"
    return 1
  fi
  stage_start=$SECONDS
  return 0
}

# done_stage N: leave the marker (holding the stage's wall time in seconds).
done_stage() {
  local secs=$(( SECONDS - stage_start ))
  echo "$secs" > "$exp_dir/.stage$1.done"
  _up=1 log "Stage $1: done in $secs s"
}

# use_venv: put the repository's .venv (tools/install.sh) on PATH unless a virtualenv is active.
use_venv() {
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/speechssl" ]; then
    export PATH="$root/.venv/bin:$PATH"
  fi
  command -v speechssl > /dev/null || die "speechssl not found: run 'bash tools/install.sh'"
}
