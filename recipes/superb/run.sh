#!/usr/bin/env bash
# SUPERB-style sweep: every downstream task x every upstream on one corpus, then one report.
#
#   bash recipes/superb/run.sh --data CORPUS --upstream NAME=SPEC [--upstream NAME=SPEC ...]
#        [--tasks "pr asr ks qbe sid asv sd ic sf er"] [--exp-dir DIR] [--nj N]
#        [--conf-dir DIR] [--seeds "1 2 3"] [--lr-sweep 1e-4,1e-3,1e-2] [--stage N] [--stop-stage M]
#        [-- OVERRIDE ...]
#
# SPEC is what `speechssl downstream -u` takes (fbank, mfcc, random:hubert@tiny, a zoo name)
# or a path to a hub model directory / training checkpoint, which is loaded with `-k` and
# reported as NAME. --conf-dir (default recipes/superb/conf) holds optional <task>.yaml runner
# configs (-c), e.g. the CPU budgets of the BiLSTM heads; "--conf-dir none" uses the tasks'
# defaults. --seeds (default "1") trains one head per seed (runner --seed); the report shows
# mean ± std over the seeds of a cell. --lr-sweep LR,LR,... (SUPERB's numbers are the best of
# a learning-rate search) trains one head per lr on the cached features of each run, keeps the lr
# that scores best on the validation split and reports its test score (runner --lr-sweep; the
# report marks those cells with †). Everything after "--" is passed to every run as `-o`
# overrides.
#
# Stages and their outputs (under --exp-dir, default exp/superb):
#   1  train   downstream/<task>_<name>/ (result.json, checkpoints, logs; <task>_<name>.log
#              beside it; seeds other than 1 add _seed<S>). Runs that already have a
#              result.json are skipped, interrupted
#              runs resume (-a); --nj runs share the machine (one torch thread each by
#              default). Upstream features are cached once per split and shared by tasks.
#   2  report  report/report.md (+ report.json, metrics.png, layer_weights.png)
#
# Example (the HuBERT recipe's corpus and iteration-2 model, next to the baselines):
#   bash recipes/superb/run.sh --data exp/hubert_tiny/corpus --upstream fbank=fbank \
#     --upstream random-hubert=random:hubert@tiny \
#     --upstream hubert-iter2=exp/hubert_tiny/iter2/checkpoint_last.pt
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=1
stop_stage=2
exp_dir=exp/superb
data=""
nj=2
tasks="pr asr ks qbe sid asv sd ic sf er"
upstreams=()
overrides=()
seeds="1"
lr_sweep=""
conf_dir=$recipe_dir/conf

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --exp-dir|--exp_dir) exp_dir=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --upstream) upstreams+=("$2"); shift 2 ;;
    --conf-dir|--conf_dir) conf_dir=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --lr-sweep|--lr_sweep) lr_sweep=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
for v in stage stop_stage nj; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v//_/-} must be a non-negative integer, got '${!v}'"
done
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
[[ $seeds =~ ^[0-9]+( [0-9]+)*$ ]] || die "--seeds must be non-negative integers separated by spaces, got '$seeds'"
num='[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?'
[ -z "$lr_sweep" ] || [[ $lr_sweep =~ ^$num(,$num)*$ ]] \
  || die "--lr-sweep must be learning rates separated by commas (e.g. 1e-4,1e-3,1e-2), got '$lr_sweep'"
[ -n "$data" ] || die "--data CORPUS is required (e.g. the output of 'speechssl corpus synth')"
[ -d "$data" ] || die "--data: no such directory '$data'"
[ "$conf_dir" = none ] || [ -d "$conf_dir" ] || die "--conf-dir: no such directory '$conf_dir'"
[ "${#upstreams[@]}" -gt 0 ] || die "give at least one --upstream NAME=SPEC"
for u in "${upstreams[@]}"; do
  [[ $u =~ ^[A-Za-z0-9._-]+=.+$ ]] || die "--upstream must be NAME=SPEC (NAME of letters, digits, . _ -), got '$u'"
done

use_venv

ds_dir=$exp_dir/downstream
mkdir -p "$ds_dir"
o_args=()
[ -z "$lr_sweep" ] || o_args+=(--lr-sweep "$lr_sweep")
for o in "${overrides[@]+"${overrides[@]}"}"; do
  o_args+=(-o "$o")
done

# run_one TASK NAME SPEC SEED: train a head on the frozen upstream, then score it on test.
run_one() {
  local task=$1 name=$2 spec=$3 seed=$4
  local dir=$ds_dir/${task}_$name
  [ "$seed" = 1 ] || dir=${dir}_seed$seed
  if [ -f "$dir/result.json" ]; then
    log "  $task / $name: $dir/result.json exists, skipping"
    return 0
  fi
  local u_args=(-u "$spec")
  [ -e "$spec" ] && u_args=(-u "$name" -k "$spec")
  local c_args=()
  [ "$conf_dir" != none ] && [ -f "$conf_dir/$task.yaml" ] && c_args=(-c "$conf_dir/$task.yaml")
  local t0=$SECONDS
  speechssl downstream -m train -d "$task" "${u_args[@]}" --data "$data" -p "$dir" -a --seed "$seed" \
    "${c_args[@]+"${c_args[@]}"}" "${o_args[@]+"${o_args[@]}"}" > "$dir.log" 2>&1 \
    || { tail -n 20 "$dir.log" >&2; die "downstream $task / $name (seed $seed) failed; full log: $dir.log"; }
  log "  $task / $name / seed $seed ($(( SECONDS - t0 )) s): $(tail -n 1 "$dir.log")"
}

t_start=$SECONDS
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: tasks ($tasks) x upstreams (${upstreams[*]}) x seeds ($seeds), $nj at a time -> $ds_dir"
  if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cores=$(nproc 2> /dev/null || echo 1)
    export OMP_NUM_THREADS=$(( cores / nj > 0 ? cores / nj : 1 ))
  fi
  pids=()
  for task in $tasks; do
    for u in "${upstreams[@]}"; do
      for seed in $seeds; do
        run_one "$task" "${u%%=*}" "${u#*=}" "$seed" &
        pids+=($!)
        if [ "${#pids[@]}" -ge "$nj" ]; then
          wait "${pids[0]}"
          pids=("${pids[@]:1}")
        fi
      done
    done
  done
  for p in "${pids[@]+"${pids[@]}"}"; do
    wait "$p"
  done
  log "Stage 1: done in $(( SECONDS - t_start )) s"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: report -> $exp_dir/report"
  speechssl downstream report "$ds_dir" --out "$exp_dir/report"
  cat "$exp_dir/report/report.md"
fi
log "superb sweep finished in $(( SECONDS - t_start )) s; outputs in $exp_dir"
