#!/usr/bin/env bash
# w2v-BERT pretraining (Chung et al., 2021; w2v-BERT 2.0 layout) and its SUPERB-style evaluation.
#
#   bash recipes/w2v_bert/run.sh [--preset tiny|base|600m] [--stage N] [--stop-stage M]
#                                [--exp-dir DIR] [--data-dir DIR] [--eval-data DIR] [--ngpu N]
#                                [--corpus-preset tiny|small|base] [--corpus-seed N]
#                                [--tasks "ks sid ..."] [--seeds "1"] [--nj N] [-- KEY=VALUE ...]
#
#   --preset     tiny (minutes on a laptop CPU), base (768 x 12) or 600m (1024 x (8 + 16), the
#                600M reproduction)
#   --data-dir   fairseq manifests {train,valid}.tsv of 16 kHz audio to pretrain on (skips the
#                synthesis of stage 0)
#   --corpus-preset / --corpus-seed  the embedded corpus stage 0 synthesizes for pretraining
#                (default: the model preset's size for tiny/base, base for 600m; seed 1, so
#                that the seed-0 evaluation corpus shares no voice or sentence with it)
#   --eval-data  the corpus the downstream tasks train and test on (default: the seed-0 corpus of
#                the same size, synthesized in stage 0 under <exp-dir>/eval_corpus)
#   --tasks      downstream tasks of stage 3 (default: all ten: "pr asr ks qbe sid asv sd ic sf er")
#   --seeds      downstream seeds (runner --seed; default "1"); --nj parallel downstream runs (2)
#   --ngpu N     pretrain under torchrun on N GPUs (default: one process, GPU if there is one)
#   -- KEY=VALUE ... pretraining config overrides, e.g. -- trainer.max_updates=2000 task.mlm_weight=0.5
#
# Stages and their outputs (all under --exp-dir, default exp/w2v_bert_<preset>):
#   0  corpus        corpus/ (pretraining, seed --corpus-seed) and eval_corpus/ (seed 0)
#                    `speechssl corpus synth`; pretraining data = corpus/pretrain
#   1  pretrain      pretrain/checkpoint_last.pt, metrics.jsonl (contrastive, MLM, diversity,
#                    code perplexity and code_usage: the codebook usage curve)
#   2  export        model/ (speechssl model directory) and model_hf/ (transformers
#                    Wav2Vec2BertModel + SeamlessM4T preprocessor), `speechssl hub convert`
#   3  downstream    superb/downstream/<task>_{w2v_bert,fbank}/ heads on the frozen upstreams
#                    (recipes/superb/run.sh), superb/report/report.md
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done
# (their outputs must exist). A finished stage leaves <exp-dir>/.stage<N>.done (its wall time,
# options and input digests) and is skipped on a rerun while those are unchanged; a stage whose
# options or inputs changed, or that --stage names, is redone (a redone pretraining moves the
# earlier pretrain/ to pretrain.prev/), and so is every later stage. Pretraining and downstream
# runs resume when interrupted.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=3
preset=tiny
exp_dir=
data_dir=
eval_data=
corpus_preset=
corpus_seed=1
tasks="pr asr ks qbe sid asv sd ic sf er"
seeds="1"
nj=2
ngpu=0
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage nj ngpu corpus_seed
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
case "$preset" in
  tiny|base) : "${corpus_preset:=$preset}" ;;
  600m) : "${corpus_preset:=base}" ;;
  *) die "--preset must be tiny, base or 600m, got '$preset'" ;;
esac
case "$corpus_preset" in
  tiny|small|base) ;;
  *) die "--corpus-preset must be tiny, small or base, got '$corpus_preset'" ;;
esac
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"; do
  [[ $o =~ ^[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] || die "pretraining overrides after -- must be KEY=VALUE, got '$o'"
done

: "${exp_dir:=exp/w2v_bert_$preset}"
use_venv

if [ -z "$data_dir" ]; then
  data_dir=$exp_dir/corpus/pretrain
  synth=true
else
  synth=false
  [ -f "$data_dir/train.tsv" ] && [ -f "$data_dir/valid.tsv" ] \
    || die "--data-dir $data_dir must hold train.tsv and valid.tsv (fairseq manifests; see 'speechssl manifest --help')"
fi
if [ -z "$eval_data" ]; then
  eval_data=$exp_dir/eval_corpus
  synth_eval=true
else
  synth_eval=false
  [ -d "$eval_data" ] || die "--eval-data: no such directory '$eval_data'"
fi
mkdir -p "$exp_dir"
ckpt=$exp_dir/pretrain/checkpoint_last.pt

# pretrain ARGS...: `speechssl pretrain`, under torchrun with --ngpu N > 1.
pretrain() {
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" "$(command -v speechssl)" pretrain "$@"
  else
    speechssl pretrain "$@"
  fi
}

log "w2v-BERT recipe: preset=$preset exp_dir=$exp_dir data=$data_dir eval=$eval_data stages $stage..$stop_stage"

s0=(--opt synth synth_eval corpus_preset corpus_seed --out "$data_dir/train.tsv" "$eval_data")
$synth || s0+=(--in "$data_dir/train.tsv" "$data_dir/valid.tsv")
if run_stage 0 "${s0[@]}"; then
  if $synth; then
    clear_outputs "$exp_dir/corpus"
    log "Stage 0: synthesize the $corpus_preset corpus (seed $corpus_seed) into $exp_dir/corpus"
    speechssl corpus synth --preset "$corpus_preset" --seed "$corpus_seed" --out "$exp_dir/corpus"
  else
    log "Stage 0: pretraining on the manifests in $data_dir"
  fi
  if $synth_eval; then
    clear_outputs "$eval_data"
    log "Stage 0: synthesize the seed-0 $corpus_preset evaluation corpus into $eval_data"
    speechssl corpus synth --preset "$corpus_preset" --seed 0 --out "$eval_data"
  fi
  done_stage 0
fi

if run_stage 1 --opt preset pretrain_overrides --in "$data_dir/train.tsv" "$data_dir/valid.tsv" --out "$ckpt"; then
  set_aside "$exp_dir/pretrain"
  log "Stage 1: pretrain w2v-BERT ($preset) on $data_dir -> $exp_dir/pretrain"
  pretrain --method w2v_bert --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/pretrain" \
    "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"
  done_stage 1
fi

if run_stage 2 --in "$ckpt" --out "$exp_dir/model" "$exp_dir/model_hf"; then
  [ -f "$ckpt" ] || die "Stage 2: no checkpoint $ckpt; run stage 1 first (--stage 1)"
  clear_outputs "$exp_dir/model" "$exp_dir/model_hf"
  log "Stage 2: export $ckpt -> $exp_dir/model (speechssl) and $exp_dir/model_hf (transformers)"
  speechssl hub convert "$ckpt" "$exp_dir/model"
  speechssl hub convert "$exp_dir/model" "$exp_dir/model_hf" --to hf
  done_stage 2
fi

if run_stage 3 --opt tasks seeds --in "$exp_dir/model" --out "$exp_dir/superb/report/report.md"; then
  [ -d "$exp_dir/model" ] || die "Stage 3: no model directory $exp_dir/model; run stage 2 first (--stage 2)"
  log "Stage 3: downstream tasks ($tasks) on the frozen w2v-BERT and fbank upstreams -> $exp_dir/superb"
  # the sweep's own markers and per-run records decide which heads to train again, unless this
  # stage is redone on purpose (--stage 3, or its marker deleted): then every head is retrained
  superb_args=(--data-dir "$eval_data" --upstream "w2v_bert=$exp_dir/model" --upstream fbank=fbank
               --tasks "$tasks" --seeds "$seeds" --nj "$nj" --exp-dir "$exp_dir/superb")
  case "$stage_why" in
    forced|unmarked) bash "$root/recipes/superb/run.sh" --stage 1 "${superb_args[@]}" ;;
    *) bash "$root/recipes/superb/run.sh" "${superb_args[@]}" ;;
  esac
  done_stage 3
fi

log "finished stages $stage..$stop_stage in $exp_dir"
