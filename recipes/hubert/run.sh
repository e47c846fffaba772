#!/usr/bin/env bash
# HuBERT pretraining in two iterations (Hsu et al., 2021; fairseq examples/hubert), stage by stage.
#
#   bash recipes/hubert/run.sh [--preset tiny|base] [--stage N] [--stop-stage M]
#                              [--exp-dir DIR] [--data-dir DIR] [--nj N] [--ngpu N]
#                              [--k1 K] [--k2 K] [--layer L] [--corpus-preset tiny|small|base]
#                              [--corpus-seed N]
#                              [-- KEY=VALUE ...]
#
#   --preset     tiny (quickstart-sized, minutes on a laptop CPU) or base (HuBERT Base, fairseq's
#                hyper-parameters; conf/<preset>_iter{1,2}.yaml)
#   --nj N       feature shards dumped by N parallel processes (default 1)
#   --ngpu N     pretrain under torchrun on N GPUs (default: one process, GPU if there is one)
#   --k1/--k2    k-means clusters of iterations 1/2 (tiny 50/100, base 100/500 as in the paper)
#   --layer L    hidden layer of the iteration-1 model clustered for iteration 2 (tiny 2, base 6)
#   --corpus-preset  size of the embedded corpus stage 0 synthesizes (default: the model preset;
#                e.g. the tiny model on the ~2.9 h small corpus)
#   --corpus-seed N  seed of that corpus (default 0). Another seed gives other voices and other
#                sentences: pretrain on `--corpus-preset small --corpus-seed 1`, then evaluate on
#                the seed-0 corpora, and no evaluation speaker or recording was heard in pretraining
#   -- KEY=VALUE ... config overrides for both pretraining runs (after the conf files); prefixed
#                with iter1: or iter2:, for that iteration only, e.g.
#                -- trainer.optim.lr=1e-3 iter1:trainer.max_updates=4000 iter2:trainer.max_updates=20000
#
# Input: the embedded corpus (stage 0 synthesizes it), or --data-dir DIR holding fairseq
# manifests {train,valid}.tsv (+ test.tsv) of 16 kHz audio, e.g. from `speechssl manifest` or
# `speechssl corpus import-librispeech`; stage 9 also needs <split>.phn_ali frame alignments there.
#
# Stages and their outputs (all under --exp-dir, default exp/hubert_<preset>):
#   0  corpus        corpus/                        `speechssl corpus synth --preset <preset>`;
#                                                   pretraining data = corpus/pretrain, the train audio of
#                                                   read/ + keywords/ + commands/ (skipped with --data-dir)
#   1  MFCC          features/mfcc39/<split>_<r>_<nj>.{npy,len}   39-d MFCC+Δ+ΔΔ at 100 Hz
#   2  k-means 1     kmeans/iter1_k<k1>.safetensors  k-means on train MFCCs
#   3  labels 1      labels/iter1/<split>.km + dict.km.txt        100 Hz units
#   4  pretrain 1    iter1/checkpoint_last.pt ...    conf/<preset>_iter1.yaml, targets labels/iter1
#   5  features L    features/iter1_layer<L>/...     hidden layer L of the iteration-1 model (50 Hz)
#   6  k-means 2     kmeans/iter2_k<k2>.safetensors
#   7  labels 2      labels/iter2/<split>.km + dict.km.txt        50 Hz units
#   8  pretrain 2    iter2/checkpoint_last.pt ...    conf/<preset>_iter2.yaml, targets labels/iter2
#   9  metrics       label_metrics.{txt,md,json}     phone purity, cluster purity, PNMI of both
#                                                   label sets against <split>.phn_ali (held-out split)
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done
# (their outputs must exist). A finished stage leaves <exp-dir>/.stage<N>.done with its wall time,
# the options it used and digests of its inputs; a rerun skips it only while those are unchanged
# and it is not the stage --stage names. Otherwise it is redone, and so is every later stage, e.g.
# `--stage 5 --k2 200` redoes features, k-means 2, labels 2, pretraining 2 and the metrics with
# k=200 (a redone pretraining stage moves the earlier iter<i>/ to iter<i>.prev/). Interrupted
# stages resume when rerun with the same options: feature dumps, label dumps and pretraining
# pick up where they stopped.
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
nj=1
ngpu=0
k1=
k2=
layer=
corpus_preset=
corpus_seed=0
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage nj ngpu corpus_seed
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"

# Per-preset settings. k and the feature layer follow the paper for base (MFCC k=100, then
# k=500 on layer 6 of the iteration-1 model). tiny: k1=50 (the corpus has 64 phones + silence),
# doubled for iteration 2 as the paper raises it; layer 2 of 4, the middle layer, scored best
# on the valid split (PNMI of layers 0-4 within 0.01 of each other after ~600 updates).
case "$preset" in
  tiny)
    : "${corpus_preset:=tiny}"
    : "${k1:=50}" "${k2:=100}" "${layer:=2}"
    km_args=()
    ;;
  base)
    : "${corpus_preset:=base}"
    : "${k1:=100}" "${k2:=500}" "${layer:=6}"
    km_args=(--percent 0.1)  # fairseq clusters a 10% sample
    ;;
  *) die "--preset must be tiny or base, got '$preset'" ;;
esac
case "$corpus_preset" in
  tiny|small|base) ;;
  *) die "--corpus-preset must be tiny, small or base, got '$corpus_preset'" ;;
esac
iter1_overrides=()
iter2_overrides=()
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"; do
  [[ $o =~ ^(iter[12]:)?[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] \
    || die "pretraining overrides after -- must be KEY=VALUE or iter1:/iter2:KEY=VALUE, got '$o'"
  case "$o" in
    iter1:*) iter1_overrides+=("${o#iter1:}") ;;
    iter2:*) iter2_overrides+=("${o#iter2:}") ;;
    *) iter1_overrides+=("$o"); iter2_overrides+=("$o") ;;
  esac
done
for v in k1 k2 layer; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--$v must be a non-negative integer, got '${!v}'"
done

: "${exp_dir:=exp/hubert_$preset}"
conf1=$recipe_dir/conf/${preset}_iter1.yaml
conf2=$recipe_dir/conf/${preset}_iter2.yaml
[ -f "$conf1" ] && [ -f "$conf2" ] || die "missing $conf1 or $conf2"

use_venv

if [ -z "$data_dir" ]; then
  data_dir=$exp_dir/corpus/pretrain
  synth=true
else
  synth=false
  [ -f "$data_dir/train.tsv" ] && [ -f "$data_dir/valid.tsv" ] \
    || die "--data-dir $data_dir must hold train.tsv and valid.tsv" \
           "(fairseq manifests; see 'speechssl manifest --help')"
fi

mkdir -p "$exp_dir"
mfcc_dir=$exp_dir/features/mfcc39
feat2_dir=$exp_dir/features/iter1_layer$layer
km1=$exp_dir/kmeans/iter1_k$k1.safetensors
km2=$exp_dir/kmeans/iter2_k$k2.safetensors
lab1=$exp_dir/labels/iter1
lab2=$exp_dir/labels/iter2

# Splits present in the data directory (train and valid always; test when it exists).
splits() {
  local s
  for s in train valid test; do
    [ -f "$data_dir/$s.tsv" ] && echo "$s"
  done
}

# Threads per process when --nj processes share the machine.
if [ "$nj" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
  cores=$(nproc 2> /dev/null || echo 1)
  export OMP_NUM_THREADS=$(( cores / nj > 0 ? cores / nj : 1 ))
fi

# pretrain ARGS...: `speechssl pretrain`, under torchrun with --ngpu N > 1.
pretrain() {
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" "$(command -v speechssl)" pretrain "$@"
  else
    speechssl pretrain "$@"
  fi
}

# run_shards CMD...: run "CMD --shard i --nshard $nj" for every shard in parallel; fail if any fails.
run_shards() {
  local pids=() i
  for (( i = 0; i < nj; i++ )); do
    "$@" --shard "$i" --nshard "$nj" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do
    wait "$i"
  done
}

log "HuBERT recipe: preset=$preset exp_dir=$exp_dir data=$data_dir stages $stage..$stop_stage" \
    "k1=$k1 k2=$k2 layer=$layer nj=$nj ngpu=$ngpu"

# The files stages read and write (computed when a stage is reached: stage 0 makes the manifests).
manifests() {
  local s
  for s in $(splits); do
    echo "$data_dir/$s.tsv"
  done
}
# feat_files DIR: DIR/<split>_<shard>_<nj>.{npy,len} of every split and shard
feat_files() {
  local s r
  for s in $(splits); do
    for (( r = 0; r < nj; r++ )); do
      echo "$1/${s}_${r}_$nj.npy"
      echo "$1/${s}_${r}_$nj.len"
    done
  done
}
# label_files DIR: DIR/<split>.km of every split and DIR/dict.km.txt
label_files() {
  local s
  for s in $(splits); do
    echo "$1/$s.km"
  done
  echo "$1/dict.km.txt"
}

if $synth; then
  s0=(--opt synth corpus_preset corpus_seed --out "$data_dir/train.tsv" "$data_dir/valid.tsv")
else
  s0=(--opt synth --in "$data_dir/train.tsv" "$data_dir/valid.tsv" --out "$data_dir/train.tsv" "$data_dir/valid.tsv")
  [ -f "$data_dir/test.tsv" ] && s0=(--in "$data_dir/test.tsv" "${s0[@]}")
fi
if run_stage 0 "${s0[@]}"; then
  if $synth; then
    clear_outputs "$exp_dir/corpus"
    log "Stage 0: synthesize the $corpus_preset corpus (seed $corpus_seed) into $exp_dir/corpus"
    speechssl corpus synth --preset "$corpus_preset" --seed "$corpus_seed" --out "$exp_dir/corpus"
  else
    log "Stage 0: using the manifests in $data_dir ($(splits | tr '\n' ' '))"
  fi
  done_stage 0
fi

mapfile -t m < <(manifests)
mapfile -t f1 < <(feat_files "$mfcc_dir")
if run_stage 1 --opt nj --in "${m[@]}" --out "${f1[@]}"; then
  clear_outputs "$mfcc_dir"
  log "Stage 1: 39-d MFCC features (HuBERT iteration 1) of $(splits | tr '\n' ' ')-> $mfcc_dir"
  for s in $(splits); do
    run_shards speechssl features dump --manifest-dir "$data_dir" --split "$s" --out "$mfcc_dir" \
      --feature mfcc39 --no-progress
  done
  done_stage 1
fi

if run_stage 2 --opt k1 nj km_args --in "$mfcc_dir" --out "$km1"; then
  clear_outputs "$km1"
  log "Stage 2: k-means, k=$k1, on the train MFCCs -> $km1"
  speechssl kmeans fit --feat-dir "$mfcc_dir" --split train --nshard "$nj" --n-clusters "$k1" \
    "${km_args[@]}" --feature "mfcc39 100 Hz" --out "$km1"
  done_stage 2
fi

mapfile -t l1 < <(label_files "$lab1")
if run_stage 3 --opt nj --in "$km1" "$mfcc_dir" --out "${l1[@]}"; then
  clear_outputs "$lab1"
  log "Stage 3: iteration-1 labels (100 Hz) of $(splits | tr '\n' ' ')-> $lab1"
  for s in $(splits); do
    speechssl dump-labels --feat-dir "$mfcc_dir" --split "$s" --nshard "$nj" --km "$km1" --out "$lab1"
  done
  done_stage 3
fi

if run_stage 4 --opt preset iter1_overrides --in "$conf1" "${m[@]}" "${l1[@]}" \
    --out "$exp_dir/iter1/checkpoint_last.pt"; then
  set_aside "$exp_dir/iter1"
  log "Stage 4: pretrain iteration 1 on $lab1 ($conf1) -> $exp_dir/iter1"
  pretrain --method hubert --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/iter1" \
    --config "$conf1" task.label_dir="$lab1" "${iter1_overrides[@]+"${iter1_overrides[@]}"}"
  done_stage 4
fi

mapfile -t f2 < <(feat_files "$feat2_dir")
if run_stage 5 --opt layer nj --in "$exp_dir/iter1/checkpoint_last.pt" "${m[@]}" --out "${f2[@]}"; then
  clear_outputs "$feat2_dir"
  log "Stage 5: layer-$layer features of the iteration-1 model -> $feat2_dir"
  for s in $(splits); do
    run_shards speechssl features dump --manifest-dir "$data_dir" --split "$s" --out "$feat2_dir" \
      --feature upstream --upstream "$exp_dir/iter1/checkpoint_last.pt" --layer "$layer" --no-progress
  done
  done_stage 5
fi

if run_stage 6 --opt k2 layer nj km_args --in "$feat2_dir" --out "$km2"; then
  clear_outputs "$km2"
  log "Stage 6: k-means, k=$k2, on the train layer-$layer features -> $km2"
  speechssl kmeans fit --feat-dir "$feat2_dir" --split train --nshard "$nj" --n-clusters "$k2" \
    "${km_args[@]}" --feature "hubert iter1 layer $layer 50 Hz" --out "$km2"
  done_stage 6
fi

mapfile -t l2 < <(label_files "$lab2")
if run_stage 7 --opt nj --in "$km2" "$feat2_dir" --out "${l2[@]}"; then
  clear_outputs "$lab2"
  log "Stage 7: iteration-2 labels (50 Hz) of $(splits | tr '\n' ' ')-> $lab2"
  for s in $(splits); do
    speechssl dump-labels --feat-dir "$feat2_dir" --split "$s" --nshard "$nj" --km "$km2" --out "$lab2"
  done
  done_stage 7
fi

if run_stage 8 --opt preset iter2_overrides --in "$conf2" "${m[@]}" "${l2[@]}" \
    --out "$exp_dir/iter2/checkpoint_last.pt"; then
  set_aside "$exp_dir/iter2"
  log "Stage 8: pretrain iteration 2 on $lab2 ($conf2) -> $exp_dir/iter2"
  pretrain --method hubert --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/iter2" \
    --config "$conf2" task.label_dir="$lab2" "${iter2_overrides[@]+"${iter2_overrides[@]}"}"
  done_stage 8
fi

# the held-out split of stage 9: test if it has an alignment, else valid
eval_split=
for s in test valid; do
  if [ -f "$data_dir/$s.phn_ali" ] && [ -f "$lab1/$s.km" ] && [ -f "$lab2/$s.km" ]; then
    eval_split=$s
    break
  fi
done
metrics=("$exp_dir"/label_metrics.{txt,md,json})
if run_stage 9 --opt k1 k2 layer eval_split \
    --in "$lab1/$eval_split.km" "$lab2/$eval_split.km" "$data_dir/$eval_split.phn_ali" --out "${metrics[@]}"; then
  if [ -z "$eval_split" ]; then
    skip_stage 9 "no test.phn_ali or valid.phn_ali in $data_dir (frame phone alignments are needed" \
      "to score the labels)"
  else
    clear_outputs "${metrics[@]}"
    log "Stage 9: label quality of both iterations on the held-out '$eval_split' split" \
        "against $data_dir/$eval_split.phn_ali"
    speechssl cluster metrics --km "$lab1/$eval_split.km" "$lab2/$eval_split.km" --label-rate 100 50 \
      --phn-ali "$data_dir/$eval_split.phn_ali" \
      --name "iter1: mfcc39 k=$k1" "iter2: iter1-L$layer k=$k2" \
      --out "$exp_dir/label_metrics.json" --markdown "$exp_dir/label_metrics.md" \
      > "$exp_dir/label_metrics.txt.tmp"
    mv "$exp_dir/label_metrics.txt.tmp" "$exp_dir/label_metrics.txt"
    cat "$exp_dir/label_metrics.txt"
    done_stage 9
  fi
fi

log "finished stages $stage..$stop_stage in $exp_dir"
