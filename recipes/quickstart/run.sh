#!/usr/bin/env bash
# speechssl quickstart: on a laptop CPU, from a fresh clone, in about five minutes (2 cores) -
# pretrain a tiny HuBERT in two iterations on the embedded espeak-ng corpus, score its
# pseudo-labels against phone alignments, and evaluate it on three SUPERB-style tasks next
# to the fbank baseline.
#
#   bash recipes/quickstart/run.sh [--stage N] [--stop-stage M] [--exp-dir DIR] [--nj N]
#
# Stages and their outputs (under --exp-dir, default exp/quickstart):
#   0  install     .venv/ (bash tools/install.sh: pinned CPU torch + speechssl; quick when up
#                  to date, so it runs every time)
#   1  hubert      hubert/  recipes/hubert/run.sh --preset tiny: corpus/, features/, kmeans/,
#                  labels/, iter1/ and iter2/ (checkpoints), label_metrics.{txt,md,json}
#   2  export      models/hubert-tiny-iter2/  the iteration-2 model as a hub model directory
#                  (config.json + model.safetensors; `speechssl.hub.load(DIR)` reads it)
#   3  downstream  downstream/<task>_<upstream>/result.json  tasks ks (keyword spotting),
#                  sid (speaker identification), pr (phone recognition) x upstreams fbank and
#                  hubert-tiny-iter2; head budgets in recipes/quickstart/conf/<task>.yaml
#   4  report      report/report.md (+ report.json, metrics.png, layer_weights.png)
#
# --nj N: downstream runs in parallel (default 2). Stages as in Kaldi/ESPnet: --stage N..--stop-stage
# M run; stages before N are taken as done (their outputs must exist). Every stage logs its wall
# time; a finished stage leaves <exp-dir>/.stage<N>.done (its seconds, options and input digests)
# and is skipped on a rerun while those are unchanged. A stage whose marker is gone, whose inputs
# changed, or that --stage names is redone from scratch, and so is every later stage; an
# interrupted stage resumes (finished downstream runs are kept).
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=4
exp_dir=exp/quickstart
nj=2
parse_options "$@"
no_extra_args
check_uint stage stop_stage nj
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
tasks="ks sid pr"

hubert_dir=$exp_dir/hubert
corpus=$hubert_dir/corpus
model_name=hubert-tiny-iter2
model_dir=$exp_dir/models/$model_name
ds_dir=$exp_dir/downstream
t_start=$SECONDS

mkdir -p "$exp_dir"

if run_stage 0 always; then
  log "Stage 0: install speechssl (tools/install.sh)"
  bash "$root/tools/install.sh"
  done_stage 0
fi
use_venv

# recipes/hubert/run.sh keeps its own stage markers in $hubert_dir: a fresh stage 1 redoes all of
# its stages (--stage 0), a resumed one continues where it stopped.
hubert_out=("$hubert_dir/iter2/checkpoint_last.pt" "$hubert_dir/label_metrics.json")
if run_stage 1 --out "${hubert_out[@]}"; then
  log "Stage 1: HuBERT, two iterations, tiny preset (recipes/hubert/run.sh) -> $hubert_dir"
  if [ "$stage_mode" = fresh ]; then
    bash "$root/recipes/hubert/run.sh" --preset tiny --exp-dir "$hubert_dir" --stage 0
  else
    bash "$root/recipes/hubert/run.sh" --preset tiny --exp-dir "$hubert_dir"
  fi
  done_stage 1
fi

if run_stage 2 --in "$hubert_dir/iter2/checkpoint_last.pt" --out "$model_dir/model.safetensors"; then
  clear_outputs "$model_dir"
  log "Stage 2: export the iteration-2 model -> $model_dir"
  speechssl hub convert "$hubert_dir/iter2/checkpoint_last.pt" "$model_dir"
  speechssl hub info "$model_dir"
  done_stage 2
fi

# run_downstream TASK NAME UPSTREAM [ARGS...]: train a head, then score it on test. A run with
# a result.json is kept only when the stage resumes (an interrupted stage 3).
run_downstream() {
  local task=$1 name=$2 upstream=$3
  shift 3
  local dir=$ds_dir/${task}_$name
  if [ "$stage_mode" = resume ] && [ -f "$dir/result.json" ]; then
    log "  $task / $name: $dir/result.json exists (interrupted stage resumed), keeping it"
    return 0
  fi
  log "  $task / $name: training the $task head -> $dir"
  speechssl downstream -m train -d "$task" -u "$upstream" "$@" --data "$corpus" -p "$dir" -a \
    -c "$recipe_dir/conf/$task.yaml" > "$dir.log" 2>&1 \
    || { tail -n 20 "$dir.log" >&2; die "downstream $task / $name failed; full log: $dir.log"; }
  log "  $task / $name: $(tail -n 1 "$dir.log")"
}

results=()
for task in $tasks; do
  results+=("$ds_dir/${task}_fbank/result.json" "$ds_dir/${task}_$model_name/result.json")
done
confs=()
for task in $tasks; do
  confs+=("$recipe_dir/conf/$task.yaml")
done
if run_stage 3 --opt tasks --in "$model_dir" "${confs[@]}" --out "${results[@]}"; then
  if [ "$stage_mode" = fresh ]; then
    for task in $tasks; do
      clear_outputs "$ds_dir/${task}_fbank" "$ds_dir/${task}_$model_name"
    done
  fi
  log "Stage 3: downstream tasks ($tasks) for fbank and $model_name, $nj at a time -> $ds_dir"
  mkdir -p "$ds_dir"
  # one thread per run when several share the machine
  if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cores=$(nproc 2> /dev/null || echo 1)
    export OMP_NUM_THREADS=$(( cores / nj > 0 ? cores / nj : 1 ))
  fi
  jobs_=()
  for task in $tasks; do
    jobs_+=("$task fbank fbank")
    jobs_+=("$task $model_name $model_name -k $model_dir")
  done
  pids=()
  for spec in "${jobs_[@]}"; do
    # shellcheck disable=SC2086  # the spec is a list of words
    run_downstream $spec &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$nj" ]; then
      wait "${pids[0]}"
      pids=("${pids[@]:1}")
    fi
  done
  for p in "${pids[@]}"; do
    wait "$p"
  done
  done_stage 3
fi

if run_stage 4 --in "${results[@]}" --out "$exp_dir/report/report.md"; then
  clear_outputs "$exp_dir/report"
  log "Stage 4: report -> $exp_dir/report"
  speechssl downstream report "$ds_dir" --out "$exp_dir/report"
  done_stage 4
fi

if [ -f "$hubert_dir/label_metrics.md" ]; then
  log "HuBERT pseudo-label quality ($hubert_dir/label_metrics.md):"
  cat "$hubert_dir/label_metrics.md"
fi
if [ -f "$exp_dir/report/report.md" ]; then
  log "Downstream report ($exp_dir/report/report.md):"
  cat "$exp_dir/report/report.md"
fi
times=
for n in 0 1 2 3 4; do
  secs=$(stage_seconds "$n")
  [ -z "$secs" ] || times+=" $n=$secs"
done
log "stage times (s, of the run that made each stage):$times"
log "quickstart finished in $(( SECONDS - t_start )) s; outputs in $exp_dir"
