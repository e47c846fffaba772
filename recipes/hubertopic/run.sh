#!/usr/bin/env bash
# HuBERTopic (Maekaku et al., ICASSP 2024): HuBERT's two iterations with an utterance topic loss.
# The HuBERT stages (corpus, MFCC, k-means, label dumps, features of the iteration-1 model) are run
# by recipes/hubert/run.sh itself; this recipe adds LDA topics over each iteration's units and
# pretrains HuBERTopic (HuBERT's conf files, so the budgets equal the HuBERT baseline's).
#
#   bash recipes/hubertopic/run.sh [--preset tiny|base] [--stage N] [--stop-stage M]
#                                  [--exp-dir DIR] [--data-dir DIR] [--nj N] [--ngpu N]
#                                  [--k1 K] [--k2 K] [--layer L] [--corpus-preset P] [--corpus-seed N]
#                                  [--topics K] [--topic-weight W] [--ngram N]
#                                  [-- KEY=VALUE ...]
#
#   --preset, --nj, --ngpu, --k1, --k2, --layer, --corpus-preset, --corpus-seed, --data-dir:
#                as recipes/hubert/run.sh (passed to it)
#   --topics K   LDA topics = model.num_topics (default: the preset's, tiny 8, base 32)
#   --topic-weight W  λ of the topic loss (default: the preset's, 0.5)
#   --ngram N    LDA words are unit n-grams of orders 1..N (default 1)
#   -- KEY=VALUE ... pretraining overrides for both iterations; iter1:/iter2: prefixes for one
#
# Stages and their outputs (under --exp-dir, default exp/hubertopic_<preset>; HuBERT's stage
# markers stay in <exp-dir>, this recipe's in <exp-dir>/hubertopic_stages):
#   0  HuBERT 0-3    corpus/, features/mfcc39/, kmeans/iter1_*, labels/iter1/<split>.km
#   1  LDA 1         labels/iter1/<split>.topic, <split>.topic_dist.npy, dict.topic.txt, lda.safetensors
#   2  pretrain 1    iter1/checkpoint_last.pt ...  HuBERTopic on labels/iter1 (units + topics),
#                    recipes/hubert/conf/<preset>_iter1.yaml
#   3  HuBERT 5-7    features of layer L of the iteration-1 HuBERTopic model, k-means 2, labels/iter2/
#   4  LDA 2         labels/iter2/<split>.topic ...
#   5  pretrain 2    iter2/checkpoint_last.pt ...  recipes/hubert/conf/<preset>_iter2.yaml
#   6  topic metrics topic_metrics_iter{1,2}.{txt,md,json}: NMI/purity of the held-out split's topics
#                    against the corpus's text topic, speaker, gender, voice and style (synthesized
#                    corpus only)
#   7  HuBERT 9      label_metrics.{txt,md,json}: phone purity / PNMI of both unit sets
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done (their
# outputs must exist). A finished stage leaves a .stage<N>.done marker (its wall time, options and
# input digests) and is skipped on a rerun while those are unchanged; a stage whose options or
# inputs changed, or that --stage names, is redone, and so is every later stage (the HuBERT stages
# by recipes/hubert/run.sh, which redoes what its own markers say changed). Interrupted stages
# resume (the HuBERT stages, LDA and pretraining all pick up where they stopped).
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=7
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
topics=
topic_weight=
ngram=1
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage nj ngpu corpus_seed ngram
case "$preset" in
  tiny) : "${topics:=8}" ;;
  base) : "${topics:=32}" ;;
  *) die "--preset must be tiny or base, got '$preset'" ;;
esac
[[ $topics =~ ^[0-9]+$ ]] && [ "$topics" -ge 2 ] || die "--topics must be an integer >= 2, got '$topics'"
[ -z "$topic_weight" ] || [[ $topic_weight =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] \
  || die "--topic-weight must be a non-negative number, got '$topic_weight'"
iter1_overrides=(model.num_topics="$topics")
iter2_overrides=(model.num_topics="$topics")
if [ -n "$topic_weight" ]; then
  iter1_overrides+=(model.topic_weight="$topic_weight")
  iter2_overrides+=(model.topic_weight="$topic_weight")
fi
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"; do
  [[ $o =~ ^(iter[12]:)?[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] \
    || die "pretraining overrides after -- must be KEY=VALUE or iter1:/iter2:KEY=VALUE, got '$o'"
  case "$o" in
    iter1:*) iter1_overrides+=("${o#iter1:}") ;;
    iter2:*) iter2_overrides+=("${o#iter2:}") ;;
    *) iter1_overrides+=("$o"); iter2_overrides+=("$o") ;;
  esac
done

: "${exp_dir:=exp/hubertopic_$preset}"
exp=$exp_dir
# this recipe's stage markers go beside (not over) those of recipes/hubert/run.sh in $exp_dir
marker_dir=$exp_dir/hubertopic_stages
conf1=$root/recipes/hubert/conf/${preset}_iter1.yaml
conf2=$root/recipes/hubert/conf/${preset}_iter2.yaml
[ -f "$conf1" ] && [ -f "$conf2" ] || die "missing $conf1 or $conf2"

use_venv
mkdir -p "$marker_dir"

# Options recipes/hubert/run.sh takes from us (it checks their values itself).
hubert_args=(--preset "$preset" --exp-dir "$exp" --nj "$nj" --ngpu "$ngpu" --corpus-seed "$corpus_seed")
for v in k1 k2 layer corpus_preset data_dir; do
  [ -z "${!v}" ] || hubert_args+=("--${v//_/-}" "${!v}")
done
# hubert ARGS...: recipes/hubert/run.sh with our options. Unless this stage is redone on purpose
# (--stage names it, or its marker was deleted), an explicit --stage there does not redo a
# finished HuBERT stage: its own markers decide what changed.
hubert() {
  case "$stage_why" in
    forced|unmarked) bash "$root/recipes/hubert/run.sh" "${hubert_args[@]}" "$@" ;;
    *) SPEECHSSL_RECIPE_RESUME=1 bash "$root/recipes/hubert/run.sh" "${hubert_args[@]}" "$@" ;;
  esac
}

if [ -z "$data_dir" ]; then
  data_dir=$exp/corpus/pretrain
  corpus=$exp/corpus
else
  corpus=
fi
lab1=$exp/labels/iter1
lab2=$exp/labels/iter2

splits() {
  local s
  for s in train valid test; do
    [ -f "$data_dir/$s.tsv" ] && echo "$s"
  done
}

pretrain() {
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" "$(command -v speechssl)" pretrain "$@"
  else
    speechssl pretrain "$@"
  fi
}

log "HuBERTopic recipe: preset=$preset exp=$exp data=$data_dir stages $stage..$stop_stage topics=$topics" \
    "topic_weight=${topic_weight:-preset} ngram=$ngram"

manifests() {
  local s
  for s in $(splits); do
    echo "$data_dir/$s.tsv"
  done
}
# unit_files DIR [EXT...]: DIR/<split>.km (and .EXT) of every split, DIR/dict.km.txt
unit_files() {
  local dir=$1 s e
  shift
  for s in $(splits); do
    echo "$dir/$s.km"
    for e in "$@"; do
      echo "$dir/$s.$e"
    done
  done
  echo "$dir/dict.km.txt"
}
lda_outputs() {  # lda_outputs DIR
  local s
  for s in $(splits); do
    echo "$1/$s.topic"
  done
  echo "$1/lda.safetensors"
}

if run_stage 0 --opt preset k1 nj corpus_preset corpus_seed data_dir \
    --out "$lab1/train.km" "$lab1/valid.km" "$lab1/dict.km.txt"; then
  log "Stage 0: HuBERT stages 0-3 (corpus, MFCC, k-means 1, iteration-1 units) by recipes/hubert/run.sh"
  hubert --stage 0 --stop-stage 3
  done_stage 0
fi
mapfile -t u1 < <(unit_files "$lab1")  # (the splits are known once stage 0 has run)

mapfile -t m < <(manifests)
mapfile -t t1 < <(lda_outputs "$lab1")
if run_stage 1 --opt topics ngram --in "${u1[@]}" "${m[@]}" --out "${t1[@]}"; then
  log "Stage 1: LDA, K=$topics, over the iteration-1 units of $(splits | tr '\n' ' ')-> $lab1"
  lda_args=()
  [ "$stage_mode" = resume ] || lda_args=(--overwrite)
  # shellcheck disable=SC2046
  speechssl cluster lda --labels "$lab1" --splits $(splits) --num-topics "$topics" --ngram "$ngram" \
    --manifest-dir "$data_dir" --no-progress "${lda_args[@]+"${lda_args[@]}"}"
  done_stage 1
fi

if run_stage 2 --opt preset iter1_overrides --in "$conf1" "${m[@]}" "${u1[@]}" "${t1[@]}" \
    --out "$exp/iter1/checkpoint_last.pt"; then
  set_aside "$exp/iter1"
  log "Stage 2: pretrain HuBERTopic iteration 1 on $lab1 (units + topics, $conf1) -> $exp/iter1"
  pretrain --method hubertopic --preset "$preset" --data "$data_dir" --exp-dir "$exp/iter1" \
    --config "$conf1" task.label_dir="$lab1" "${iter1_overrides[@]}"
  done_stage 2
fi

mapfile -t u2 < <(unit_files "$lab2")
if run_stage 3 --opt layer k2 nj --in "$exp/iter1/checkpoint_last.pt" "${m[@]}" --out "${u2[@]}"; then
  log "Stage 3: HuBERT stages 5-7 (features of the iteration-1 HuBERTopic model, k-means 2, units 2)"
  hubert --stage 5 --stop-stage 7
  done_stage 3
fi

mapfile -t t2 < <(lda_outputs "$lab2")
if run_stage 4 --opt topics ngram --in "${u2[@]}" "${m[@]}" --out "${t2[@]}"; then
  log "Stage 4: LDA, K=$topics, over the iteration-2 units -> $lab2"
  lda_args=()
  [ "$stage_mode" = resume ] || lda_args=(--overwrite)
  # shellcheck disable=SC2046
  speechssl cluster lda --labels "$lab2" --splits $(splits) --num-topics "$topics" --ngram "$ngram" \
    --manifest-dir "$data_dir" --no-progress "${lda_args[@]+"${lda_args[@]}"}"
  done_stage 4
fi

if run_stage 5 --opt preset iter2_overrides --in "$conf2" "${m[@]}" "${u2[@]}" "${t2[@]}" \
    --out "$exp/iter2/checkpoint_last.pt"; then
  set_aside "$exp/iter2"
  log "Stage 5: pretrain HuBERTopic iteration 2 on $lab2 ($conf2) -> $exp/iter2"
  pretrain --method hubertopic --preset "$preset" --data "$data_dir" --exp-dir "$exp/iter2" \
    --config "$conf2" task.label_dir="$lab2" "${iter2_overrides[@]}"
  done_stage 5
fi

eval_split=valid
[ -f "$data_dir/test.tsv" ] && [ -f "$lab1/test.topic" ] && eval_split=test
tm_out=()
[ -z "$corpus" ] || tm_out=("$exp"/topic_metrics_iter{1,2}.{txt,md,json})
if run_stage 6 --opt topics eval_split --in "$lab1/$eval_split.topic" "$lab2/$eval_split.topic" \
    --out "${tm_out[@]+"${tm_out[@]}"}"; then
  if [ -z "$corpus" ]; then
    skip_stage 6 "topic metrics need the embedded corpus's utterance labels (not with --data-dir)"
  else
    clear_outputs "${tm_out[@]}"
    for it in 1 2; do
      lab=$exp/labels/iter$it
      log "Stage 6: topic metrics of iteration $it ($lab/$eval_split.topic) against $corpus"
      speechssl cluster topic-metrics --topic "$lab/$eval_split.topic" --manifest "$data_dir/$eval_split.tsv" \
        --corpus "$corpus" --name "iter$it K=$topics" --out "$exp/topic_metrics_iter$it.json" \
        --markdown "$exp/topic_metrics_iter$it.md" > "$exp/topic_metrics_iter$it.txt.tmp"
      mv "$exp/topic_metrics_iter$it.txt.tmp" "$exp/topic_metrics_iter$it.txt"
      cat "$exp/topic_metrics_iter$it.txt"
    done
    done_stage 6
  fi
fi

# stage 7 scores when the data has frame alignments (recipes/hubert/run.sh stage 9)
lm_out=()
for s in test valid; do
  [ -f "$data_dir/$s.phn_ali" ] && lm_out=("$exp/label_metrics.json")
done
if run_stage 7 --in "${u1[@]}" "${u2[@]}" --out "${lm_out[@]+"${lm_out[@]}"}"; then
  log "Stage 7: HuBERT stage 9 (phone purity / PNMI of both unit sets)"
  hubert --stage 9 --stop-stage 9
  if [ "${#lm_out[@]}" -eq 0 ]; then
    skip_stage 7 "no test.phn_ali or valid.phn_ali in $data_dir"
  else
    done_stage 7
  fi
fi

log "finished stages $stage..$stop_stage in $exp"
