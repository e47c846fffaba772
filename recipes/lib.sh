# Shell helpers shared by the recipes (sourced, not run): icefall-style logging, one option
# parser (Kaldi's utils/parse_options.sh), --help from the script's header, and stages whose
# markers record what they were made from.
#
# A recipe sets `root` (the repository) and `recipe_dir`, sources this file, sets its options'
# defaults, then calls `parse_options "$@"`:
#
#   stage=0 stop_stage=9 exp_dir= k2=100 upstream=()     # defaults = the options
#   parse_options "$@"       # --k2 200, --k2=200, --stop-stage 3 / --stop_stage 3, --upstream a (arrays
#                            # collect repeats); after "--": extra_args; unknown options are an error
#
# Stages (Kaldi/ESPnet/icefall): the stages of --stage..--stop-stage run; those before --stage
# are taken as done (their declared outputs must exist). A stage declares its options, inputs
# and outputs:
#
#   if run_stage 6 --opt k2 layer --in "$feat_dir" --out "$km"; then
#     clear_outputs "$km"          # fresh run: remove what an earlier run left (not on a resume)
#     ...                          # the stage's commands
#     done_stage 6                 # checks the outputs exist and are non-empty, then the marker
#   fi
#
# <marker_dir (default exp_dir)>/.stage<N>.done records the stage's wall time and fingerprint:
# the values of its --opt variables and a digest of every --in path (sha256 of files up to
# 64 MiB, size + mtime of larger files and of the files of a directory). A stage is skipped
# ("skipped (up to date)") only when its marker's fingerprint equals this run's, the stage is
# not the one an explicit --stage names, and no earlier stage ran in this invocation; otherwise it
# runs, and so does every later stage of the range ("Stage 6: k2 changed 100 -> 200, redoing
# stages 6-9"). A running stage keeps <marker_dir>/.stage<N>.running (its fingerprint): a
# rerun with the same fingerprint resumes it (stage_mode=resume: the speechssl verbs pick up
# where they stopped); anything else runs it afresh (stage_mode=fresh).
# SPEECHSSL_RECIPE_RESUME=1 (set by a recipe that runs another recipe's stages to continue
# them): an explicit --stage does not redo a finished stage.

# _where UP: "recipe/file:line" of the caller UP frames above log/die (hubert/run.sh:211), so
# that the lines of a recipe run by another recipe say whose they are.
_where() {
  local src=${BASH_SOURCE[$1 + 2]} dir
  dir=${src%/*}
  [ "$dir" = "$src" ] && dir=. || dir=${dir##*/}
  echo "$dir/${src##*/}:${BASH_LINENO[$1 + 1]}"
}

# log MSG...: time, recipe/file:line of the caller (of the caller's caller with _up=1), message.
log() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(_where "${_up:-0}")) $*" >&2
}

# die MSG...: log an error at the caller's file:line (its caller's with _up=1) and exit 1.
die() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(_where "${_up:-0}")) error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Options

declare -ga extra_args=()  # the words after "--"
declare -gA _opt_given=()  # options given on the command line (variable names)
declare -gA _opt_default=()
declare -gA _opt_alias=()
_opt_names=()

# option_alias OLD NEW: --OLD is accepted as --NEW (e.g. option_alias exp exp-dir).
option_alias() {
  _opt_alias[${1//-/_}]=${2//-/_}
}

# parse_options "$@": every variable the recipe defined after sourcing lib.sh (lowercase names)
# is an option: `--name value` or `--name=value` sets variable `name` (dashes become
# underscores); an array variable collects every occurrence. -h/--help prints the header and
# the defaults, then exits. Words after "--" go to the array extra_args.
parse_options() {
  local _v _name _value
  _opt_names=()
  for _v in $(compgen -v | LC_ALL=C sort); do
    [[ $_v =~ ^[a-z][a-z0-9_]*$ ]] || continue
    [[ " $_lib_vars " == *" $_v "* ]] && continue
    _opt_names+=("$_v")
    if _is_array "$_v"; then
      local -n _arr=$_v
      _opt_default[$_v]="${_arr[*]+"${_arr[*]}"}"
      unset -n _arr
    else
      _opt_default[$_v]=${!_v}
    fi
  done
  local _cleared=" "
  while [ $# -gt 0 ]; do
    case "$1" in
      --) shift; extra_args=("$@"); break ;;
      -h|--help) usage; exit 0 ;;
      --?*) _name=${1%%=*} ;;
      *) _up=1 die "unknown argument '$1': options are --name value, and words for the commands go after '--' (see --help)" ;;
    esac
    _v=${_name#--}
    _v=${_v//-/_}
    [ -n "${_opt_alias[$_v]:-}" ] && _v=${_opt_alias[$_v]}
    [[ " ${_opt_names[*]} " == *" $_v "* ]] || _up=1 die "unknown option '$_name' (see --help)"
    if [[ $1 == *=* ]]; then
      _value=${1#*=}
      shift
    else
      [ $# -ge 2 ] || _up=1 die "option '$1' needs a value (see --help)"
      _value=$2
      shift 2
    fi
    if _is_array "$_v"; then
      # the first occurrence replaces the default, later ones append
      [[ $_cleared == *" $_v "* ]] || { eval "$_v=()"; _cleared+="$_v "; }
      eval "$_v+=(\"\$_value\")"
    else
      printf -v "$_v" '%s' "$_value"
    fi
    _opt_given[$_v]=1
  done
}

# given NAME: true when option NAME (variable name) was on the command line.
given() {
  [ -n "${_opt_given[$1]:-}" ]
}

# no_extra_args: error when words followed "--" (for recipes that take none).
no_extra_args() {
  [ "${#extra_args[@]}" -eq 0 ] || _up=1 die "this recipe takes no arguments after '--' (got '${extra_args[*]}')"
}

# check_uint NAME...: each option is a non-negative integer.
check_uint() {
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[0-9]+$ ]] || _up=1 die "--${v//_/-} must be a non-negative integer, got '${!v}'"
  done
}

_is_array() {
  [[ $(declare -p "$1" 2> /dev/null) == "declare -a"* ]]
}

# usage: the running script's header comment (line 2 up to `set -euo`, without the '#'), then
# every option with its default (the values parse_options found).
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  [ "${#_opt_names[@]}" -gt 0 ] || return 0
  echo
  echo "Options and their defaults (--name value or --name=value; --a-b and --a_b are the same):"
  local v d
  for v in "${_opt_names[@]}"; do
    d=${_opt_default[$v]}
    if _is_array "$v"; then
      echo "  --${v//_/-} ${d:-(none)}  (repeatable)"
    else
      case "$d" in
        '') d="(unset; see above)" ;;
        *' '*) d="\"$d\"" ;;
      esac
      echo "  --${v//_/-} $d"
    fi
  done
  local a
  for a in "${!_opt_alias[@]}"; do
    echo "  --${a//_/-} is --${_opt_alias[$a]//_/-}"
  done
}

# ---------------------------------------------------------------------------------------------
# Stages

stage_start=0
stage_mode=         # fresh | resume, for the stage that runs
stage_why=          # why it runs: first (never ran), unmarked (outputs but no marker), forced (--stage),
                    # changed (options or inputs), after (an earlier stage ran), resume, always
_stage_n=
_stage_fp=
_stage_outs=()
_ran_stage=         # the first stage that ran in this invocation: later stages run too

_marker_dir() {
  echo "${marker_dir:-$exp_dir}"
}

# _key PATH: PATH with a leading $exp_dir/ written <exp>/ and one inside the checkout ($root,
# set by every recipe) written <root>/, so markers depend on neither where the experiment is
# named from nor where the checkout lives (a moved or fresh clone reuses finished stages whose
# inputs' contents are unchanged).
_key() {
  local p=$1
  [ -n "${exp_dir:-}" ] && p=${p/#"${exp_dir%/}"\//<exp>/}
  [ -n "${root:-}" ] && p=${p/#"${root%/}"\//<root>/}
  echo "$p"
}

# _digest PATH: sha256 of a file up to 64 MiB, size+mtime of a larger one, sha256 of the list
# of (name, size, mtime) of a directory's files, or "missing".
_digest() {
  local p=$1 size
  if [ -f "$p" ]; then
    size=$(stat -Lc %s "$p")
    if [ "$size" -le $(( 64 << 20 )) ]; then
      echo "sha256:$(sha256sum < "$p" | cut -c1-64)"
    else
      echo "size:$size mtime:$(stat -Lc %Y "$p")"
    fi
  elif [ -d "$p" ]; then
    echo "tree:$(find -L "$p" -type f ! -name '.stage*' -printf '%P %s %T@\n' | LC_ALL=C sort | sha256sum | cut -c1-64)"
  else
    echo missing
  fi
}

# _fingerprint OPTS_NAME INS_NAME: the fingerprint lines ("opt<TAB>name<TAB>value",
# "in<TAB>path<TAB>digest") of the named arrays of option names and input paths.
_fingerprint() {
  local -n _o=$1 _i=$2
  local v p
  for v in "${_o[@]+"${_o[@]}"}"; do
    if _is_array "$v"; then
      local -n _a=$v
      printf 'opt\t%s\t%s\n' "$v" "${_a[*]+"${_a[*]}"}"
      unset -n _a
    else
      printf 'opt\t%s\t%s\n' "$v" "${!v-}"
    fi
  done
  for p in "${_i[@]+"${_i[@]}"}"; do
    printf 'in\t%s\t%s\n' "$(_key "$p")" "$(_digest "$p")"
  done
}

# _changes RECORDED CURRENT: what differs between two fingerprints, in words ("k2 changed 100
# -> 200; input <exp>/labels/iter2/train.km changed"); empty when they are equal.
_changes() {
  local -A old=() new=()
  local kind name value out=() k
  local keys=()
  while IFS=$'\t' read -r kind name value; do
    [ "$kind" = opt ] || [ "$kind" = in ] || continue
    old["$kind $name"]=$value
    keys+=("$kind $name")
  done <<< "$1"
  while IFS=$'\t' read -r kind name value; do
    [ "$kind" = opt ] || [ "$kind" = in ] || continue
    new["$kind $name"]=$value
    [ -n "${old["$kind $name"]+x}" ] || keys+=("$kind $name")
  done <<< "$2"
  for k in "${keys[@]+"${keys[@]}"}"; do
    kind=${k%% *} name=${k#* }
    [ "${old[$k]-<unset>}" = "${new[$k]-<unset>}" ] && continue
    if [ "$kind" = opt ]; then
      out+=("$name changed ${old[$k]:-(none)} -> ${new[$k]:-(none)}")
    elif [ -z "${old[$k]+x}" ]; then
      out+=("new input $name")
    elif [ -z "${new[$k]+x}" ]; then
      out+=("input $name no longer used")
    else
      out+=("input $name changed")
    fi
  done
  [ "${#out[@]}" -gt 0 ] || return 0
  local text=${out[0]} i
  for (( i = 1; i < ${#out[@]} && i < 4; i++ )); do
    text+="; ${out[i]}"
  done
  [ "${#out[@]}" -le 4 ] || text+="; and $(( ${#out[@]} - 4 )) more"
  echo "$text"
}

# _nonempty PATH: a non-empty file, or a directory with at least one entry.
_nonempty() {
  if [ -d "$1" ]; then
    [ -n "$(ls -A "$1" 2> /dev/null)" ]
  else
    [ -s "$1" ]
  fi
}

# _field FILE KEY: the value of a "KEY<TAB>value" line of a marker.
_field() {
  awk -F '\t' -v k="$2" '$1 == k { print $2; exit }' "$1" 2> /dev/null
}

# run_stage N [always] [--opt NAME...] [--in PATH...] [--out PATH...]: true when stage N is to
# run now (see the header of this file), after logging why a finished stage runs again.
#   always  the stage runs whenever it is in the range (an install step); it leaves a marker
#           with its time but neither its fingerprint nor its running redoes later stages.
#   --opt   option variables the stage's result depends on (arrays: their words)
#   --in    files or directories it reads (the outputs of earlier stages, manifests, configs)
#   --out   what it must produce: checked to exist for a stage before --stage, checked to be
#           non-empty by done_stage
run_stage() {
  local n=$1
  shift
  local always=false
  if [ "${1:-}" = always ]; then always=true; shift; fi
  local opts=() ins=() outs=() mode=
  while [ $# -gt 0 ]; do
    case "$1" in
      --opt|--in|--out) mode=${1#--} ;;
      *)
        case "$mode" in
          opt) opts+=("$1") ;;
          in) ins+=("$1") ;;
          out) outs+=("$1") ;;
          *) _up=1 die "run_stage $n: '$1' is not after --opt, --in or --out" ;;
        esac ;;
    esac
    shift
  done
  [ "$stop_stage" -ge "$n" ] || return 1
  local dir done_f running_f o
  dir=$(_marker_dir)
  done_f=$dir/.stage$n.done
  running_f=$dir/.stage$n.running
  if [ "$stage" -gt "$n" ]; then
    # taken as done: what it makes must be there
    for o in "${outs[@]+"${outs[@]}"}"; do
      [ -e "$o" ] || _up=1 die "stage $n's output $o is missing (--stage $stage takes stages before" \
        "$stage as done); run stage $n first: --stage $n"
    done
    if [ "${#opts[@]}" -gt 0 ] && grep -qs $'^seconds\t' "$done_f"; then
      local empty=() changed
      changed=$(_changes "$(grep $'^opt\t' "$done_f")" "$(_fingerprint opts empty)")
      [ -z "$changed" ] || _up=1 log "Stage $n: taken as done (--stage $stage), although it was made" \
        "with other options ($changed); rerun from --stage $n to apply them"
    fi
    return 1
  fi
  _stage_n=$n
  _stage_outs=("${outs[@]+"${outs[@]}"}")
  if $always; then
    _stage_fp=
    stage_mode=fresh
    stage_why=always
    stage_start=$SECONDS
    return 0
  fi
  local fp reason= changed
  fp=$(_fingerprint opts ins)
  stage_mode=fresh
  stage_why=first
  if [ -f "$done_f" ]; then
    local when legacy=false
    when=$(_field "$done_f" finished)
    grep -q $'^seconds\t' "$done_f" || legacy=true
    changed=$($legacy || _changes "$(cat "$done_f")" "$fp")
    if [ -n "$_ran_stage" ]; then
      reason=after stage_why=after
    elif given stage && [ "$n" -eq "$stage" ] && [ -z "${SPEECHSSL_RECIPE_RESUME:-}" ]; then
      reason="--stage $n given (it was done${when:+ at $when})" stage_why=forced
    elif [ -n "$changed" ]; then
      reason=$changed stage_why=changed
    else
      local secs
      if $legacy; then
        secs=$(head -c 64 "$done_f" | tr -dc 0-9)
        _up=1 log "Stage $n: skipped (marked done${secs:+ in $secs s} by an older recipe, which recorded" \
          "no options; --stage $n redoes it)"
      else
        secs=$(_field "$done_f" seconds)
        _up=1 log "Stage $n: skipped (up to date; done in $secs s at $when)"
      fi
      return 1
    fi
  elif [ -f "$running_f" ]; then
    changed=$(_changes "$(cat "$running_f")" "$fp")
    if [ -z "$changed" ]; then
      stage_mode=resume stage_why=resume
      _up=1 log "Stage $n: resuming (an earlier run was interrupted; same options and inputs)"
    else
      reason="$changed since the interrupted run" stage_why=changed
      [ -z "$_ran_stage" ] || stage_why=after
    fi
  else
    for o in "${outs[@]+"${outs[@]}"}"; do
      if [ -e "$o" ]; then
        stage_why=unmarked
        [ -n "$_ran_stage" ] || reason="no marker $done_f"
        break
      fi
    done
    [ -z "$_ran_stage" ] || stage_why=after
  fi
  if [ -n "$reason" ] && [ "$reason" != after ]; then
    local range="stage $n"
    [ "$stop_stage" -gt "$n" ] && range="stages $n-$stop_stage"
    _up=1 log "Stage $n: $reason, redoing $range"
  fi
  [ -n "$_ran_stage" ] || _ran_stage=$n
  mkdir -p "$dir"
  rm -f "$done_f"
  printf '%s\n' "$fp" > "$running_f"
  _stage_fp=$fp
  stage_start=$SECONDS
  return 0
}

# clear_outputs PATH...: in a fresh run of the stage, remove what an earlier run of it left
# (files or directories, which must lie inside $exp_dir); nothing on a resume.
clear_outputs() {
  [ "$stage_mode" = fresh ] || return 0
  local p
  for p in "$@"; do
    case "$(realpath -m "$p")/" in
      "$(realpath -m "$exp_dir")"/?*) ;;
      *) _up=1 die "clear_outputs: $p is not inside the experiment directory $exp_dir" ;;
    esac
    if [ -e "$p" ]; then
      _up=1 log "Stage $_stage_n: removing the earlier run's $p"
      rm -rf -- "$p"
    fi
  done
}

# set_aside DIR: in a fresh run of the stage, move an earlier run's DIR (inside $exp_dir) to
# DIR.prev (replacing an older DIR.prev), so that e.g. pretraining starts over instead of
# resuming another configuration's checkpoint.
set_aside() {
  [ "$stage_mode" = fresh ] && [ -e "$1" ] || return 0
  case "$(realpath -m "$1")/" in
    "$(realpath -m "$exp_dir")"/?*) ;;
    *) _up=1 die "set_aside: $1 is not inside the experiment directory $exp_dir" ;;
  esac
  rm -rf -- "$1.prev"
  mv -- "$1" "$1.prev"
  _up=1 log "Stage $_stage_n: moved the earlier run's $1 to $1.prev"
}

# done_stage N: check the stage's outputs, then leave its marker (wall time + fingerprint).
done_stage() {
  local n=$1 o dir
  [ "$n" = "$_stage_n" ] || _up=1 die "done_stage $n: stage $n was not started by run_stage"
  for o in "${_stage_outs[@]+"${_stage_outs[@]}"}"; do
    _nonempty "$o" || _up=1 die "Stage $n produced nothing at $o (missing or empty); no marker written"
  done
  local secs=$(( SECONDS - stage_start ))
  dir=$(_marker_dir)
  mkdir -p "$dir"
  {
    printf 'seconds\t%s\n' "$secs"
    printf 'finished\t%s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    [ -z "$_stage_fp" ] || printf '%s\n' "$_stage_fp"
  } > "$dir/.stage$n.done.tmp"
  mv "$dir/.stage$n.done.tmp" "$dir/.stage$n.done"
  rm -f "$dir/.stage$n.running"
  _stage_n=
  _up=1 log "Stage $n: done in $secs s"
}

# skip_stage N MSG...: the stage has nothing to do this time (e.g. no alignments to score):
# log MSG, leave no marker, so that a later run tries again.
skip_stage() {
  local n=$1
  shift
  rm -f "$(_marker_dir)/.stage$n.running"
  _stage_n=
  _up=1 log "Stage $n: skipped: $*"
}

# stage_seconds N: the wall time a finished stage recorded (empty when it has no marker).
stage_seconds() {
  local f
  f=$(_marker_dir)/.stage$1.done
  [ -f "$f" ] || return 0
  if grep -q $'^seconds\t' "$f"; then
    _field "$f" seconds
  else
    head -c 64 "$f" | tr -dc 0-9
  fi
}

# use_venv: put the repository's .venv (tools/install.sh) on PATH unless a virtualenv is active.
use_venv() {
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/speechssl" ]; then
    export PATH="$root/.venv/bin:$PATH"
  fi
  command -v speechssl > /dev/null || die "speechssl not found: run 'bash tools/install.sh'"
}

# the variables defined so far are not options (see parse_options)
_lib_vars=$(compgen -v | tr '\n' ' ')
