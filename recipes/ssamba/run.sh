#!/usr/bin/env bash
# SSAMBA (self-supervised audio Mamba) on the embedded espeak-ng corpus, end to end on a CPU.
#
# Stages (each writes under its output directory and leaves a .done marker; a rerun skips
# finished stages, and an interrupted pretraining resumes from its checkpoint_last.pt):
#   0  corpus    speechssl corpus synth --preset $corpus_preset
#                  -> $corpus/  (wav/, subsets read/ keywords/ ... with {train,valid,test}.tsv + labels)
#   1  pretrain  speechssl pretrain --method ssamba --preset $preset on $corpus/pretrain
#                  (the train audio of read/ + keywords/ + commands/)
#                  -> $exp/pretrain/  (config.yaml, checkpoint_{best,last}.pt, metrics.jsonl, train.log)
#   2  evaluate  speechssl downstream: a head on the frozen SSAMBA, and on the fbank baseline,
#                for each task in $tasks
#                  -> $exp/downstream/{ssamba,fbank}_<task>/ (result.json), $exp/downstream/report/report.md
#
# Usage:
#   bash recipes/ssamba/run.sh [--stage N] [--stop-stage M] [--preset nano|tiny|small|base]
#        [--corpus-preset tiny|small|base] [--corpus DIR] [--exp DIR] [--tasks "ks sid"]
#        [--downstream-updates N] [-- KEY=VALUE ...]
# Everything after "--" is passed to `speechssl pretrain` as config overrides, e.g.
#   bash recipes/ssamba/run.sh --preset nano -- trainer.max_updates=400 task.mask_mode=random
set -euo pipefail

stage=0
stop_stage=2
preset=nano
corpus_preset=tiny
corpus=""
exp=""
tasks="ks sid"
downstream_updates=300
pretrain_overrides=()

log() {
  # timestamp, file:line of the caller, message (icefall style)
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --corpus-preset) corpus_preset=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --downstream-updates) downstream_updates=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pretrain_overrides=("$@"); break ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

corpus=${corpus:-data/corpus_${corpus_preset}}
exp=${exp:-exp/ssamba_${preset}}
mkdir -p "$exp"

# The repository's virtual environment (tools/install.sh) unless one is active.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$root/.venv/bin/speechssl" ]; then
  export PATH="$root/.venv/bin:$PATH"
fi
if ! command -v speechssl >/dev/null 2>&1; then
  echo "the speechssl command is not on PATH; install the package (tools/install.sh) or activate its venv" >&2
  exit 1
fi

log "SSAMBA recipe: stages $stage..$stop_stage, preset $preset, corpus $corpus ($corpus_preset), exp $exp"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ -f "$corpus/.stage0.done" ]; then
    log "Stage 0: corpus $corpus already built, skipping"
  else
    log "Stage 0: synthesizing the $corpus_preset corpus into $corpus"
    speechssl corpus synth --preset "$corpus_preset" --out "$corpus"
    touch "$corpus/.stage0.done"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  if [ -f "$exp/.stage1.done" ]; then
    log "Stage 1: $exp/pretrain already pretrained, skipping"
  else
    log "Stage 1: pretraining SSAMBA ($preset) on $corpus/pretrain"
    speechssl pretrain --method ssamba --preset "$preset" --data "$corpus/pretrain" --exp-dir "$exp/pretrain" \
      "${pretrain_overrides[@]}"
    touch "$exp/.stage1.done"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -f "$exp/.stage2.done" ]; then
    log "Stage 2: downstream evaluation already done, skipping"
  else
    ckpt=$exp/pretrain/checkpoint_best.pt
    [ -f "$ckpt" ] || ckpt=$exp/pretrain/checkpoint_last.pt
    if [ ! -f "$ckpt" ]; then
      log "Stage 2: no checkpoint in $exp/pretrain; run stage 1 first"
      exit 1
    fi
    for task in $tasks; do
      for upstream in ssamba fbank; do
        out=$exp/downstream/${upstream}_${task}
        if [ -f "$out/.done" ]; then
          log "Stage 2: $upstream on $task already evaluated ($out)"
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
        touch "$out/.done"
      done
    done
    log "Stage 2: writing the report"
    speechssl downstream report --out "$exp/downstream/report" "$exp/downstream"
    touch "$exp/.stage2.done"
    log "Stage 2: report in $exp/downstream/report/report.md"
  fi
fi

log "done"
