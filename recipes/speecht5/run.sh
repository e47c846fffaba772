#!/usr/bin/env bash
# SpeechT5 (Ao et al., 2022): joint speech + text pretraining of one encoder-decoder, its
# SUPERB-style evaluation, and fine-tuning through the decoder (ASR, TTS smoke check).
#
#   bash recipes/speecht5/run.sh [--preset tiny] [--stage N] [--stop-stage M] [--exp-dir DIR]
#                                [--corpus-preset tiny|small|base] [--corpus-seed N]
#                                [--data-dir DIR --text-corpus DIR] [--eval-data DIR]
#                                [--k1 K] [--vocab-size N] [--extra-text N] [--nj N] [--ngpu N]
#                                [--tasks "pr asr ..."] [--seeds "1"] [--upstream NAME=SRC ...]
#                                [-- KEY=VALUE ...]
#
#   --preset       tiny (minutes on a laptop CPU; conf/tiny*.yaml)
#   --corpus-preset / --corpus-seed  the embedded corpus stage 0 synthesizes for pretraining
#                  (default: tiny, seed 1, so that the seed-0 evaluation corpus shares no voice
#                  with it; its evaluation text is also kept out of the unpaired text)
#   --data-dir     fairseq manifests {train,valid}.tsv of 16 kHz audio to pretrain on instead
#                  (then --text-corpus names a corpus folder with <subset>/train.wrd for the text)
#   --eval-data    the corpus the downstream tasks and the fine-tuning train and test on
#                  (default: the seed-0 corpus of --corpus-preset, synthesized in stage 0)
#   --k1 K         k-means units of the MFCC labels (default 50, HuBERT tiny's iteration 1)
#   --vocab-size N sentencepiece pieces (default 256); --extra-text N unspoken sentences (2000)
#   --tasks, --seeds, --nj  downstream tasks (default all ten), seeds, parallel runs (2)
#   --upstream NAME=SRC  more upstreams for the downstream table (e.g. a HuBERT checkpoint);
#                  the SpeechT5 encoder and fbank are always there
#   --ngpu N       pretrain under torchrun on N GPUs (default: one process)
#   -- KEY=VALUE ... pretraining config overrides (after conf/<preset>.yaml)
#
# Stages and their outputs (all under --exp-dir, default exp/speecht5_<preset>):
#   0  corpus        corpus/ (pretraining, seed --corpus-seed), eval_corpus/ (seed 0)
#                    `speechssl corpus synth`; pretraining speech = corpus/pretrain
#   1  MFCC          features/mfcc39/<split>_<r>_<nj>.{npy,len}   39-d MFCC+Δ+ΔΔ at 100 Hz
#   2  k-means       kmeans/k<k1>.safetensors     (the HuBERT recipe's iteration-1 labels)
#   3  labels        labels/<split>.km + dict.km.txt               100 Hz units
#   4  text          text/{train,valid}.txt, unpaired.json (`speechssl text unpaired`, evaluation
#                    text of both corpora kept out), text/spm.model (`speechssl text spm-train`)
#   5  pretrain      pretrain/checkpoint_last.pt, metrics.jsonl (units, mel L1, stop BCE, text
#                    CE, codebook diversity and perplexity), conf/<preset>.yaml
#   6  export        model/ (speechssl model directory: encoder, decoder, pre/post-nets)
#   7  downstream    superb/downstream/<task>_<upstream>/ (recipes/superb/run.sh), superb/report/
#   8  asr           asr/result.json: WER/CER of greedy decoding through the decoder on the
#                    evaluation corpus's read/ test split (`speechssl speecht5 asr`,
#                    conf/<preset>_asr.yaml), beside superb's CTC asr head
#   9  tts           tts/result.json: valid mel L1 before/after a few text -> log-mel updates
#                    (`speechssl speecht5 tts`, conf/<preset>_tts.yaml)
#
# A finished stage leaves <exp-dir>/.stage<N>.done with its wall time, options and input
# digests; a rerun skips it while those are unchanged and it is not the stage --stage names,
# else it redoes it and every later stage. Interrupted stages resume when rerun.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=9
preset=tiny
exp_dir=
data_dir=
text_corpus=
eval_data=
corpus_preset=tiny
corpus_seed=1
k1=50
vocab_size=256
extra_text=2000
tasks="pr asr ks qbe sid asv sd ic sf er"
seeds="1"
nj=2
ngpu=0
upstream=()
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage nj ngpu corpus_seed k1 vocab_size extra_text
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
case "$preset" in
  tiny) ;;
  *) die "--preset must be tiny, got '$preset' (only tiny has recipe confs; others: speechssl pretrain --method speecht5)" ;;
esac
case "$corpus_preset" in
  tiny|small|base) ;;
  *) die "--corpus-preset must be tiny, small or base, got '$corpus_preset'" ;;
esac
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"; do
  [[ $o =~ ^[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] || die "pretraining overrides after -- must be KEY=VALUE, got '$o'"
done
for u in "${upstream[@]+"${upstream[@]}"}"; do
  [[ $u =~ ^[A-Za-z0-9_.-]+=.+$ ]] || die "--upstream must be NAME=SRC, got '$u'"
done

: "${exp_dir:=exp/speecht5_$preset}"
conf=$recipe_dir/conf/$preset.yaml
conf_asr=$recipe_dir/conf/${preset}_asr.yaml
conf_tts=$recipe_dir/conf/${preset}_tts.yaml
[ -f "$conf" ] && [ -f "$conf_asr" ] && [ -f "$conf_tts" ] || die "missing $conf, $conf_asr or $conf_tts"

if [ -z "$data_dir" ]; then
  data_dir=$exp_dir/corpus/pretrain
  : "${text_corpus:=$exp_dir/corpus}"
  synth=true
else
  synth=false
  [ -f "$data_dir/train.tsv" ] && [ -f "$data_dir/valid.tsv" ] \
    || die "--data-dir $data_dir must hold train.tsv and valid.tsv (fairseq manifests; see 'speechssl manifest --help')"
  [ -n "$text_corpus" ] || die "--data-dir needs --text-corpus DIR (a corpus folder with <subset>/train.wrd)"
fi
if [ -z "$eval_data" ]; then
  eval_data=$exp_dir/eval_corpus
  synth_eval=true
else
  synth_eval=false
  [ -d "$eval_data" ] || die "--eval-data: no such directory '$eval_data'"
fi

use_venv
mkdir -p "$exp_dir"
mfcc_dir=$exp_dir/features/mfcc39
km=$exp_dir/kmeans/k$k1.safetensors
lab=$exp_dir/labels
text_dir=$exp_dir/text
spm=$text_dir/spm.model
ckpt=$exp_dir/pretrain/checkpoint_last.pt
model=$exp_dir/model
pretrain_splits="train valid"

# pretrain ARGS...: `speechssl pretrain`, under torchrun with --ngpu N > 1.
pretrain() {
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" "$(command -v speechssl)" pretrain "$@"
  else
    speechssl pretrain "$@"
  fi
}

log "SpeechT5 recipe: preset=$preset exp_dir=$exp_dir data=$data_dir text=$text_corpus eval=$eval_data" \
    "stages $stage..$stop_stage"

s0=(--opt synth synth_eval corpus_preset corpus_seed --out "$data_dir/train.tsv" "$data_dir/valid.tsv")
$synth_eval && s0+=("$eval_data/corpus.json")
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

feats=() labels=() manifests=()
for s in $pretrain_splits; do
  manifests+=("$data_dir/$s.tsv")
  feats+=("$mfcc_dir/${s}_0_1.npy" "$mfcc_dir/${s}_0_1.len")
  labels+=("$lab/$s.km")
done
labels+=("$lab/dict.km.txt")

if run_stage 1 --in "${manifests[@]}" --out "${feats[@]}"; then
  clear_outputs "$mfcc_dir"
  log "Stage 1: 39-d MFCC features of $pretrain_splits -> $mfcc_dir"
  for s in $pretrain_splits; do
    speechssl features dump --manifest-dir "$data_dir" --split "$s" --out "$mfcc_dir" --feature mfcc39 --shard 0 \
      --nshard 1 --no-progress
  done
  done_stage 1
fi

if run_stage 2 --opt k1 --in "$mfcc_dir" --out "$km"; then
  clear_outputs "$km"
  log "Stage 2: k-means, k=$k1, on the train MFCCs -> $km"
  speechssl kmeans fit --feat-dir "$mfcc_dir" --split train --nshard 1 --n-clusters "$k1" --feature "mfcc39 100 Hz" \
    --out "$km"
  done_stage 2
fi

if run_stage 3 --in "$km" "$mfcc_dir" --out "${labels[@]}"; then
  clear_outputs "$lab"
  log "Stage 3: 100 Hz unit labels of $pretrain_splits -> $lab"
  for s in $pretrain_splits; do
    speechssl dump-labels --feat-dir "$mfcc_dir" --split "$s" --nshard 1 --km "$km" --out "$lab"
  done
  done_stage 3
fi

exclude=()
[ "$(realpath -m "$eval_data")" = "$(realpath -m "$text_corpus")" ] || exclude=(--exclude "$eval_data")
if run_stage 4 --opt vocab_size extra_text --in "$text_corpus" --out "$text_dir/train.txt" "$text_dir/valid.txt" "$spm"; then
  clear_outputs "$text_dir"
  log "Stage 4: unpaired text of $text_corpus (evaluation text kept out) and a $vocab_size-piece sentencepiece model -> $text_dir"
  speechssl text unpaired "$text_corpus" --out "$text_dir" --extra "$extra_text" "${exclude[@]+"${exclude[@]}"}"
  speechssl text spm-train --text "$text_dir/train.txt" --out "$spm" --vocab-size "$vocab_size"
  done_stage 4
fi

if run_stage 5 --opt preset pretrain_overrides --in "$conf" "${manifests[@]}" "${labels[@]}" "$text_dir" --out "$ckpt"; then
  set_aside "$exp_dir/pretrain"
  log "Stage 5: pretrain SpeechT5 ($preset) on $data_dir (units $lab) + $text_dir -> $exp_dir/pretrain"
  pretrain --method speecht5 --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/pretrain" --config "$conf" \
    task.label_dir="$lab" task.text_dir="$text_dir" task.spm_model="$spm" \
    "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"
  done_stage 5
fi

if run_stage 6 --in "$ckpt" --out "$model"; then
  clear_outputs "$model"
  log "Stage 6: export $ckpt -> $model"
  speechssl hub convert "$ckpt" "$model"
  done_stage 6
fi

if run_stage 7 --opt tasks seeds upstream --in "$model" --out "$exp_dir/superb/report/report.md"; then
  log "Stage 7: downstream tasks ($tasks) on the frozen SpeechT5 encoder, fbank ${upstream[*]+and ${upstream[*]}} -> $exp_dir/superb"
  ups=(--upstream "speecht5=$model" --upstream fbank=fbank)
  for u in "${upstream[@]+"${upstream[@]}"}"; do
    ups+=(--upstream "$u")
  done
  bash "$root/recipes/superb/run.sh" --data "$eval_data" "${ups[@]}" --tasks "$tasks" --seeds "$seeds" --nj "$nj" \
    --exp-dir "$exp_dir/superb"
  done_stage 7
fi

if run_stage 8 --in "$model" "$spm" "$conf_asr" --out "$exp_dir/asr/result.json"; then
  set_aside "$exp_dir/asr"
  log "Stage 8: ASR fine-tuning through the decoder on $eval_data/read -> $exp_dir/asr"
  speechssl speecht5 asr --data "$eval_data/read" --spm-model "$spm" --init "$model" --exp-dir "$exp_dir/asr" \
    --preset "$preset" --config "$conf_asr"
  log "Stage 8: $(cat "$exp_dir/asr/result.json" | tr -s ' \n' ' ')"
  done_stage 8
fi

if run_stage 9 --in "$model" "$spm" "$conf_tts" --out "$exp_dir/tts/result.json"; then
  set_aside "$exp_dir/tts"
  log "Stage 9: TTS smoke check (text -> log-mel) on $eval_data/read -> $exp_dir/tts"
  speechssl speecht5 tts --data "$eval_data/read" --spm-model "$spm" --init "$model" --exp-dir "$exp_dir/tts" \
    --preset "$preset" --config "$conf_tts" --eval-split valid
  done_stage 9
fi

log "finished stages $stage..$stop_stage in $exp_dir"
