#!/usr/bin/env bash
# A stand-in for `speechssl` in the recipe tests: appends its arguments to $FAKE_SPEECHSSL_CALLS
# and writes small files where the real verbs write their outputs (their content names the
# arguments, so that other options give other bytes). FAKE_SPEECHSSL_NOTHING=VERB makes VERB
# write nothing (a stage that produces nothing).
set -euo pipefail
echo "$*" >> "${FAKE_SPEECHSSL_CALLS:?}"
verb=$1
[ $# -ge 2 ] && [[ $2 != -* ]] && verb="$1 $2"
[ "${FAKE_SPEECHSSL_NOTHING:-}" = "$verb" ] && exit 0
# opt NAME: the value of --NAME (or -NAME) in the arguments
opt() {
  local prev= a
  for a in "${ARGS[@]}"; do
    [ "$prev" = "$1" ] && { echo "$a"; return 0; }
    prev=$a
  done
}
ARGS=("$@")
case "$verb" in
  "corpus synth")
    out=$(opt --out)
    mkdir -p "$out/pretrain"
    for s in train valid test; do
      echo "$*" > "$out/pretrain/$s.tsv"
    done
    echo "ali $*" > "$out/pretrain/test.phn_ali" ;;
  "features dump")
    out=$(opt --out)
    mkdir -p "$out"
    f=$out/$(opt --split)_$(opt --shard)_$(opt --nshard)
    echo "$*" > "$f.npy"
    echo "$*" > "$f.len" ;;
  "kmeans fit")
    out=$(opt --out)
    mkdir -p "$(dirname "$out")"
    echo "$*" > "$out" ;;
  dump-labels)
    out=$(opt --out)
    mkdir -p "$out"
    { cat "$(opt --km)"; echo "$*"; } > "$out/$(opt --split).km"
    echo "$*" > "$out/dict.km.txt" ;;
  pretrain)
    out=$(opt --exp-dir)
    mkdir -p "$out"
    echo "$*" > "$out/checkpoint_last.pt" ;;
  "cluster metrics")
    echo "$*" > "$(opt --out)"
    echo "$*" > "$(opt --markdown)"
    echo "metrics table" ;;
  "cluster lda")
    lab=$(opt --labels)
    for s in train valid test; do
      echo "$*" > "$lab/$s.topic"
    done
    echo "$*" > "$lab/lda.safetensors" ;;
  "cluster topic-metrics")
    echo "$*" > "$(opt --out)"
    echo "$*" > "$(opt --markdown)"
    echo "topic table" ;;
  "hub convert")
    mkdir -p "$4"
    echo "$*" > "$4/model.safetensors" ;;
  downstream)
    dir=$(opt -p)
    mkdir -p "$dir"
    echo "{\"args\": \"$*\"}" > "$dir/result.json"
    echo "test result of $*" ;;
  "downstream report")
    out=$(opt --out)
    mkdir -p "$out"
    echo "report of $*" > "$out/report.md" ;;
esac
