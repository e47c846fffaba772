#!/usr/bin/env bash
# SUPERB-style sweep: every downstream task x every upstream on one corpus, then one report.
#
#   bash recipes/superb/run.sh --data-dir CORPUS --upstream NAME=SPEC [--upstream NAME=SPEC ...]
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
#   1  train   downstream/<task>_<name>/ (result.json, checkpoints, logs; <task>_<name>.log and
#              <task>_<name>.inputs, the run's options and input digests, beside it; seeds other
#              than 1 add _seed<S>). --nj runs share the machine (one torch thread each by
#              default). Upstream features are cached once per split and shared by tasks.
#   2  report  report/report.md (+ report.json, metrics.png, layer_weights.png)
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run, and a finished stage is skipped on
# a rerun while its options and inputs (recorded in <exp-dir>/.stage<N>.done) are unchanged.
# When they changed (e.g. another --upstream or --tasks), stage 1 trains only the runs whose own
# options or inputs changed and keeps the others, so adding an upstream to a finished sweep
# trains only the new column; an interrupted stage 1 keeps its finished runs and resumes the
# others (-a). --stage 1 retrains every run. --data is --data-dir.
#
# Example (the HuBERT recipe's corpus and iteration-2 model, next to the baselines):
#   bash recipes/superb/run.sh --data-dir exp/hubert_tiny/corpus --upstream fbank=fbank \
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
data_dir=
nj=2
tasks="pr asr ks qbe sid asv sd ic sf er"
upstream=()
seeds="1"
lr_sweep=
conf_dir=$recipe_dir/conf
option_alias data data-dir
parse_options "$@"
overrides=("${extra_args[@]+"${extra_args[@]}"}")
check_uint stage stop_stage nj
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
[[ $seeds =~ ^[0-9]+( [0-9]+)*$ ]] || die "--seeds must be non-negative integers separated by spaces, got '$seeds'"
num='[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?'
[ -z "$lr_sweep" ] || [[ $lr_sweep =~ ^$num(,$num)*$ ]] \
  || die "--lr-sweep must be learning rates separated by commas (e.g. 1e-4,1e-3,1e-2), got '$lr_sweep'"
[ -n "$data_dir" ] || die "--data-dir CORPUS is required (e.g. the output of 'speechssl corpus synth')"
[ -d "$data_dir" ] || die "--data-dir: no such directory '$data_dir'"
[ "$conf_dir" = none ] || [ -d "$conf_dir" ] || die "--conf-dir: no such directory '$conf_dir'"
[ "${#upstream[@]}" -gt 0 ] || die "give at least one --upstream NAME=SPEC"
for u in "${upstream[@]}"; do
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

# The corpus's manifests and label files (what the runs read besides the audio), two levels deep.
mapfile -t data_files < <(find -L "$data_dir" -maxdepth 2 -type f ! -name '*.wav' ! -name '*.flac' \
  ! -name '.*' | LC_ALL=C sort)
confs=()
for task in $tasks; do
  [ "$conf_dir" != none ] && [ -f "$conf_dir/$task.yaml" ] && confs+=("$conf_dir/$task.yaml")
done
run_dir() {  # run_dir TASK NAME SEED
  local dir=$ds_dir/${1}_$2
  [ "$3" = 1 ] || dir=${dir}_seed$3
  echo "$dir"
}
results=()
for task in $tasks; do
  for u in "${upstream[@]}"; do
    for seed in $seeds; do
      results+=("$(run_dir "$task" "${u%%=*}" "$seed")/result.json")
    done
  done
done

# run_inputs TASK SPEC SEED: what one run is made from: its options, its runner config, the
# upstream (a path's digest) and the corpus's manifests.
run_inputs() {
  local task=$1 spec=$2 seed=$3 f
  printf 'task %s\nupstream %s\nseed %s\nlr_sweep %s\noverrides %s\n' "$task" "$spec" "$seed" "$lr_sweep" \
    "${overrides[*]+"${overrides[*]}"}"
  [ "$conf_dir" != none ] && [ -f "$conf_dir/$task.yaml" ] && echo "conf $(_digest "$conf_dir/$task.yaml")"
  [ -e "$spec" ] && echo "upstream_files $(_digest "$spec")"
  for f in "${data_files[@]+"${data_files[@]}"}"; do
    echo "data ${f#"$data_dir"/} $(_digest "$f")"
  done
}

# run_one TASK NAME SPEC SEED: train a head on the frozen upstream, then score it on test. A
# finished run is kept when its recorded inputs (<dir>.inputs) equal this run's and the stage
# is not redone as a whole (--stage 1); a run of the older recipe (no <dir>.inputs) is kept
# while no stage marker exists yet.
run_one() {
  local task=$1 name=$2 spec=$3 seed=$4
  local dir inputs
  dir=$(run_dir "$task" "$name" "$seed")
  inputs=$(run_inputs "$task" "$spec" "$seed")
  if [ -f "$dir/result.json" ] && [ "$stage_why" != forced ]; then
    if [ -f "$dir.inputs" ] && [ "$(cat "$dir.inputs")" = "$inputs" ]; then
      log "  $task / $name / seed $seed: $dir/result.json is up to date, keeping it"
      return 0
    elif [ ! -f "$dir.inputs" ] && [ "$stage_why" = unmarked ]; then
      log "  $task / $name / seed $seed: keeping $dir/result.json of an older recipe, which recorded" \
          "no inputs (--stage 1 retrains it)"
      return 0
    fi
  fi
  if [ -e "$dir" ] && { [ "$stage_mode" = fresh ] || [ ! -f "$dir.inputs" ] || [ "$(cat "$dir.inputs")" != "$inputs" ]; }; then
    # another configuration's (or a finished) run: start it again instead of resuming it
    log "  $task / $name / seed $seed: removing the earlier run $dir"
    rm -rf -- "$dir"
  fi
  rm -f "$dir.inputs"
  local u_args=(-u "$spec")
  [ -e "$spec" ] && u_args=(-u "$name" -k "$spec")
  local c_args=()
  [ "$conf_dir" != none ] && [ -f "$conf_dir/$task.yaml" ] && c_args=(-c "$conf_dir/$task.yaml")
  local t0=$SECONDS
  mkdir -p "$(dirname "$dir")"
  printf '%s\n' "$inputs" > "$dir.inputs.tmp"
  speechssl downstream -m train -d "$task" "${u_args[@]}" --data "$data_dir" -p "$dir" -a --seed "$seed" \
    "${c_args[@]+"${c_args[@]}"}" "${o_args[@]+"${o_args[@]}"}" > "$dir.log" 2>&1 \
    || { tail -n 20 "$dir.log" >&2; die "downstream $task / $name (seed $seed) failed; full log: $dir.log"; }
  [ -s "$dir/result.json" ] || die "downstream $task / $name (seed $seed) wrote no $dir/result.json; see $dir.log"
  mv "$dir.inputs.tmp" "$dir.inputs"
  log "  $task / $name / seed $seed ($(( SECONDS - t0 )) s): $(tail -n 1 "$dir.log")"
}

t_start=$SECONDS
if run_stage 1 --opt tasks upstream seeds lr_sweep overrides conf_dir --in "${confs[@]}" "${data_files[@]}" \
    --out "${results[@]}"; then
  log "Stage 1: tasks ($tasks) x upstreams (${upstream[*]}) x seeds ($seeds), $nj at a time -> $ds_dir"
  if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cores=$(nproc 2> /dev/null || echo 1)
    export OMP_NUM_THREADS=$(( cores / nj > 0 ? cores / nj : 1 ))
  fi
  pids=()
  for task in $tasks; do
    for u in "${upstream[@]}"; do
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
  done_stage 1
fi

if run_stage 2 --in "${results[@]}" --out "$exp_dir/report/report.md"; then
  clear_outputs "$exp_dir/report"
  log "Stage 2: report -> $exp_dir/report"
  speechssl downstream report "$ds_dir" --out "$exp_dir/report"
  cat "$exp_dir/report/report.md"
  done_stage 2
fi
log "superb sweep finished in $(( SECONDS - t_start )) s; outputs in $exp_dir"
