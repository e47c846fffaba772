#!/usr/bin/env bash
# SSAMBA (self-supervised audio Mamba) on the embedded espeak-ng corpus, end to end on a CPU.
#
#   bash recipes/ssamba/run.sh [--stage N] [--stop-stage M] [--preset nano|tiny|small|base]
#        [--corpus-preset tiny|small|base] [--data-dir DIR] [--exp-dir DIR] [--tasks "ks sid"]
#        [--downstream-updates N] [-- KEY=VALUE ...]
#
#   --preset       SSAMBA model size (default nano)
#   --corpus-preset  size of the corpus stage 0 synthesizes (default tiny)
#   --data-dir DIR an existing corpus (`speechssl corpus synth` layout: pretrain/ and the task
#                  subsets); stage 0 then synthesizes nothing
#   --exp-dir DIR  the experiment directory (default exp/ssamba_<preset>)
#   --tasks        downstream tasks of stage 2 (default "ks sid")
#   --downstream-updates N  updates of each downstream head (default 300)
#   -- KEY=VALUE ... config overrides of `speechssl pretrain`, e.g.
#                  bash recipes/ssamba/run.sh --preset nano -- trainer.max_updates=400 task.mask_mode=random
#   --exp and --corpus are accepted for --exp-dir and --data-dir.
#
# Stages and their outputs (under --exp-dir):
#   0  corpus    corpus/ (wav/, subsets read/ keywords/ ... with {train,valid,test}.tsv + labels)
#                `speechssl corpus synth --preset <corpus-preset>`; skipped with --data-dir
#   1  pretrain  pretrain/ (config.yaml, checkpoint_{best,last}.pt, metrics.jsonl, train.log)
#                `speechssl pretrain --method ssamba --preset <preset>` on the corpus's pretrain/
#                view (the train audio of read/ + keywords/ + commands/)
#   2  evaluate  downstream/{ssamba,fbank}_<task>/result.json (a head on the frozen SSAMBA, and on
#                the fbank baseline, for each task) and downstream/report/report.md
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done
# (their outputs must exist). A finished stage leaves <exp-dir>/.stage<N>.done (its wall time,
# options and input digests) and is skipped on a rerun while those are unchanged; a stage whose
# options or inputs changed, or that --stage names, is redone from scratch (a redone pretraining
# moves the earlier pretrain/ to pretrain.prev/), and so is every later stage. An interrupted
# stage resumes: pretraining from its checkpoint_last.pt, evaluation keeping its finished heads.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=2
preset=nano
corpus_preset=tiny
data_dir=
exp_dir=
tasks="ks sid"
downstream_updates=300
option_alias exp exp-dir
option_alias corpus data-dir
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage downstream_updates
case "$preset" in
  nano|tiny|small|base) ;;
  *) die "--preset must be nano, tiny, small or base, got '$preset'" ;;
esac
case "$corpus_preset" in
  tiny|small|base) ;;
  *) die "--corpus-preset must be tiny, small or base, got '$corpus_preset'" ;;
esac
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"; do
  [[ $o =~ ^[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] || die "pretraining overrides after -- must be KEY=VALUE, got '$o'"
done
: "${exp_dir:=exp/ssamba_$preset}"
if [ -z "$data_dir" ]; then
  corpus=$exp_dir/corpus
  synth=true
else
  corpus=$data_dir
  synth=false
  [ -f "$corpus/pretrain/train.tsv" ] \
    || die "--data-dir $corpus must be a corpus with pretrain/train.tsv (see 'speechssl corpus synth --help')"
fi

use_venv
mkdir -p "$exp_dir"

log "SSAMBA recipe: stages $stage..$stop_stage, preset $preset, corpus $corpus ($corpus_preset), exp $exp_dir"

if $synth; then
  s0=(--opt synth corpus_preset --out "$corpus/pretrain/train.tsv")
else
  s0=(--opt synth --in "$corpus/pretrain/train.tsv" "$corpus/pretrain/valid.tsv" --out "$corpus/pretrain/train.tsv")
fi
if run_stage 0 "${s0[@]}"; then
  if $synth; then
    clear_outputs "$corpus"
    log "Stage 0: synthesizing the $corpus_preset corpus into $corpus"
    speechssl corpus synth --preset "$corpus_preset" --out "$corpus"
  else
    log "Stage 0: using the corpus in $corpus"
  fi
  done_stage 0
fi

if run_stage 1 --opt preset pretrain_overrides --in "$corpus/pretrain/train.tsv" "$corpus/pretrain/valid.tsv" \
    --out "$exp_dir/pretrain/checkpoint_last.pt"; then
  set_aside "$exp_dir/pretrain"
  log "Stage 1: pretraining SSAMBA ($preset) on $corpus/pretrain"
  speechssl pretrain --method ssamba --preset "$preset" --data "$corpus/pretrain" --exp-dir "$exp_dir/pretrain" \
    "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"
  done_stage 1
fi

ckpt=$exp_dir/pretrain/checkpoint_best.pt
[ -f "$ckpt" ] || ckpt=$exp_dir/pretrain/checkpoint_last.pt
ds_dir=$exp_dir/downstream
results=()
for task in $tasks; do
  results+=("$ds_dir/ssamba_$task/result.json" "$ds_dir/fbank_$task/result.json")
done
mapfile -t data_files < <(find -L "$corpus" -maxdepth 2 -name '*.tsv' | LC_ALL=C sort)
if run_stage 2 --opt tasks downstream_updates --in "$ckpt" "${data_files[@]}" \
    --out "${results[@]}" "$ds_dir/report/report.md"; then
  [ -f "$ckpt" ] || die "Stage 2: no checkpoint in $exp_dir/pretrain; run stage 1 first (--stage 1)"
  clear_outputs "$ds_dir"
  for task in $tasks; do
    for upstream in ssamba fbank; do
      out=$ds_dir/${upstream}_${task}
      if [ "$stage_mode" = resume ] && [ -f "$out/result.json" ]; then
        log "Stage 2: $upstream on $task already evaluated ($out), keeping it"
        continue
      fi
      log "Stage 2: training a $task head on the frozen $upstream upstream -> $out"
      if [ "$upstream" = ssamba ]; then
        source_args=(-u "$ckpt")
      else
        source_args=(-u fbank)
      fi
      speechssl downstream -m train "${source_args[@]}" -d "$task" --data "$corpus" -p "$out" \
        -o "trainer.max_updates=$downstream_updates" --auto-resume
    done
  done
  log "Stage 2: writing the report"
  speechssl downstream report --out "$ds_dir/report" "$ds_dir"
  log "Stage 2: report in $ds_dir/report/report.md"
  done_stage 2
fi

log "finished stages $stage..$stop_stage in $exp_dir"
