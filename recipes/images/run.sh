#!/usr/bin/env bash
# The image side end to end: the embedded image corpus, every image method pretrained on the
# shared Trainer, frozen-representation probes of each next to raw pixels and a random-init
# backbone, one report.
#
#   bash recipes/images/run.sh [--methods mae,cae,simclr] [--preset tiny|small]
#                              [--corpus-preset tiny|small] [--corpus-seed N] [--exp-dir DIR]
#                              [--probes "shape colour count digits roads objects"] [--seeds "1"]
#                              [--random-init mae@tiny] [--pixels yes|no] [--ds-override KEY=VALUE ...]
#                              [--stage N] [--stop-stage M] [-- KEY=VALUE ...]
#
#   --methods    comma-separated image methods to pretrain (`speechssl pretrain --help` lists
#                them; any registered method of modality image: mae, cae, simclr, mixedae, ...)
#   --preset     their model preset (tiny: minutes on 2 CPU cores; every image method has tiny)
#   --corpus-preset / --corpus-seed  the corpus of stage 0 (`speechssl corpus images`; tiny is
#                32 px, small 64 px); pretraining reads its scenes/, the probes every subset
#   --probes     frozen-representation probes of stage 3:
#                  shape colour count  image_probe on scenes/ (linear + k-NN, task.factor=...)
#                  digits              image_probe on scikit-learn's digits (task.subset=digits)
#                  roads               image_seg on the road scenes (per-patch linear, mIoU)
#                  objects             image_seg on the scenes' object masks (task.subset=scenes)
#                  roads_unsup         image_seg_unsup on the road scenes (k-means of the frozen patch
#                                      features, Hungarian-matched to the classes, mIoU; not in the default)
#                image_seg sums the layers with learnt weights; an upstream whose hidden states
#                differ in width (a ResNet, e.g. simclr's) is probed on its last one (-l -1)
#   --random-init METHOD@PRESET  the randomly initialised backbone of the random baseline
#                (-u random:METHOD@PRESET, reported as random-METHOD; default mae@tiny); "none"
#                leaves it out.
#   --pixels     yes (default): the raw-pixel baseline (-u pixels) runs too; no: leaves it out
#                (an ablation whose baselines another experiment directory already has)
#   --seeds      probe seeds (runner --seed; the report shows mean +- std over them)
#   --ds-override KEY=VALUE  runner override for every probe (repeatable), e.g.
#                --ds-override trainer.max_updates=200 (image_seg's head training)
#   -- KEY=VALUE ... pretraining overrides for every method, e.g. -- trainer.max_updates=100
#
# Stages and their outputs (all under --exp-dir, default exp/images_<preset>):
#   0  corpus     corpus/ (scenes/, roads/, digits/ with manifests, labels, masks, README.md)
#   1  pretrain   pretrain/<method>/checkpoint_last.pt, metrics.jsonl (`speechssl pretrain`)
#   2  export     models/<method>/ speechssl model directories (`speechssl hub convert`)
#   3  probes     probes/<probe>/<upstream>/result.json (+ <upstream>.log, <upstream>.inputs)
#                 for every probe x upstream (the methods, pixels, random-<method>) x seed
#   4  report     report/<probe>/report.md (+ report.json, metrics.png) per probe and
#                 report/report.md, all of them in one file
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done
# (their outputs must exist). A finished stage leaves <exp-dir>/.stage<N>.done (its wall time,
# options and input digests) and is skipped on a rerun while those are unchanged; a stage whose
# options or inputs changed, or that --stage names, is redone, and so is every later stage.
# Pretraining resumes when interrupted. In stage 3 a probe whose result.json was made from the
# same options and inputs (recorded in <upstream>.inputs) is kept unless --stage 3 names it, so
# adding a method probes only the new one.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=4
methods=mae,cae,simclr
preset=tiny
corpus_preset=tiny
corpus_seed=0
exp_dir=
probes="shape colour count digits roads objects"
seeds="1"
random_init=mae@tiny
pixels=yes
ds_override=()
parse_options "$@"
pretrain_overrides=("${extra_args[@]+"${extra_args[@]}"}")

check_uint stage stop_stage corpus_seed
case "$preset" in
  tiny|small) ;;
  *) die "--preset must be tiny or small, got '$preset'" ;;
esac
case "$corpus_preset" in
  tiny|small) ;;
  *) die "--corpus-preset must be tiny or small, got '$corpus_preset'" ;;
esac
[[ $methods =~ ^[a-z0-9_]+(,[a-z0-9_]+)*$ ]] || die "--methods must be method names separated by commas, got '$methods'"
[[ $seeds =~ ^[0-9]+( [0-9]+)*$ ]] || die "--seeds must be non-negative integers separated by spaces, got '$seeds'"
case "$pixels" in
  yes|no) ;;
  *) die "--pixels must be yes or no, got '$pixels'" ;;
esac
[ "$random_init" = none ] || [[ $random_init =~ ^[a-z0-9_]+@[a-z0-9_]+$ ]] \
  || die "--random-init must be METHOD@PRESET (e.g. mae@tiny) or none, got '$random_init'"
for p in $probes; do
  case "$p" in
    shape|colour|count|digits|roads|objects|roads_unsup) ;;
    *) die "--probes: unknown probe '$p' (shape, colour, count, digits, roads, objects, roads_unsup)" ;;
  esac
done
[ -n "${probes// /}" ] || die "--probes is empty"
for o in "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}" "${ds_override[@]+"${ds_override[@]}"}"; do
  [[ $o =~ ^[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] || die "overrides (after -- and --ds-override) must be KEY=VALUE, got '$o'"
done
IFS=, read -r -a method_list <<< "$methods"

: "${exp_dir:=exp/images_$preset}"
use_venv
mkdir -p "$exp_dir"
corpus=$exp_dir/corpus

# the upstreams of stage 3: NAME=SPEC (SPEC a model directory, or what `-u` takes)
upstreams=()
for m in "${method_list[@]}"; do
  upstreams+=("$m=$exp_dir/models/$m")
done
[ "$pixels" = no ] || upstreams+=("pixels=pixels")
[ "$random_init" = none ] || upstreams+=("random-${random_init%@*}=random:$random_init")

# probe_args PROBE: the runner's -d and -o for a probe
probe_args() {
  case "$1" in
    shape|colour|count) echo "-d image_probe -o task.subset=scenes,task.factor=$1" ;;
    digits) echo "-d image_probe -o task.subset=digits,task.factor=digit" ;;
    roads) echo "-d image_seg -o task.subset=roads" ;;
    objects) echo "-d image_seg -o task.subset=scenes" ;;
    roads_unsup) echo "-d image_seg_unsup -o task.subset=roads" ;;
  esac
}

# seg_layer_for NAME SPEC: sets seg_layer[NAME] to "-l -1" when the model directory SPEC has hidden
# states of several widths (a ResNet's stages, which no weighted sum can combine: image_seg then
# probes the last one), else to nothing; asks `speechssl hub info` once per upstream.
declare -A seg_layer=()
seg_layer_for() {
  [ -n "${seg_layer[$1]+x}" ] && return 0
  seg_layer[$1]=
  [ -d "$2" ] || return 0
  local sizes
  sizes=$(speechssl hub info "$2" | sed -n 's/^hidden states: *\[\(.*\)\]$/\1/p')
  if [ -n "$sizes" ] && [ "$(tr -d ' ' <<< "$sizes" | tr , '\n' | sort -u | wc -l)" -gt 1 ]; then
    seg_layer[$1]="-l -1"
    log "  $1: hidden states of widths [$sizes] cannot be summed; image_seg probes the last one (-l -1)"
  fi
}

# run_dir PROBE NAME SEED: the probe's experiment directory (seed 1 without suffix)
run_dir() {
  local dir=$exp_dir/probes/$1/$2
  [ "$3" = 1 ] || dir=${dir}_seed$3
  echo "$dir"
}

log "image recipe: methods=$methods preset=$preset corpus=$corpus_preset (seed $corpus_seed) exp_dir=$exp_dir" \
    "stages $stage..$stop_stage"

if run_stage 0 --opt corpus_preset corpus_seed --out "$corpus/scenes/train.tsv" "$corpus/roads/train.tsv" \
    "$corpus/digits/train.tsv"; then
  clear_outputs "$corpus"
  log "Stage 0: image corpus $corpus_preset (seed $corpus_seed) -> $corpus"
  speechssl corpus images --preset "$corpus_preset" --seed "$corpus_seed" --out "$corpus"
  done_stage 0
fi

ckpts=()
for m in "${method_list[@]}"; do
  ckpts+=("$exp_dir/pretrain/$m/checkpoint_last.pt")
done
if run_stage 1 --opt methods preset pretrain_overrides --in "$corpus/scenes/train.tsv" "$corpus/scenes/valid.tsv" \
    --out "${ckpts[@]}"; then
  # a method whose finished run was made from the same options and corpus (pretrain/<method>.inputs)
  # is kept, so adding a method pretrains only the new one (--stage 1 pretrains every one again)
  corpus_digest=$(cat "$corpus/scenes/train.tsv" "$corpus/scenes/valid.tsv" | sha256sum | cut -c1-64)
  for m in "${method_list[@]}"; do
    dir=$exp_dir/pretrain/$m
    inputs="method=$m preset=$preset corpus=$corpus_digest ${pretrain_overrides[*]-}"
    if [ -f "$dir/checkpoint_last.pt" ] && [ "$stage_why" != forced ] && [ -f "$dir.inputs" ] \
        && [ "$(cat "$dir.inputs")" = "$inputs" ]; then
      log "  $m: $dir/checkpoint_last.pt is up to date, keeping it"
      continue
    fi
    if [ ! -f "$dir.inputs" ] || [ "$(cat "$dir.inputs")" != "$inputs" ] || [ "$stage_why" = forced ]; then
      set_aside "$dir"  # another configuration's run (a fresh stage only; a resumed one continues it)
    fi
    rm -f "$dir.inputs"
    mkdir -p "$exp_dir/pretrain"
    log "Stage 1: pretrain $m ($preset) on $corpus/scenes -> $dir"
    speechssl pretrain --method "$m" --preset "$preset" --data "$corpus/scenes" --exp-dir "$dir" \
      "${pretrain_overrides[@]+"${pretrain_overrides[@]}"}"
    printf '%s\n' "$inputs" > "$dir.inputs"
  done
  done_stage 1
fi

models=()
for m in "${method_list[@]}"; do
  models+=("$exp_dir/models/$m")
done
if run_stage 2 --in "${ckpts[@]}" --out "${models[@]}"; then
  clear_outputs "${models[@]}"
  for m in "${method_list[@]}"; do
    ckpt=$exp_dir/pretrain/$m/checkpoint_last.pt
    [ -f "$ckpt" ] || die "Stage 2: no checkpoint $ckpt; run stage 1 first (--stage 1)"
    log "Stage 2: export $ckpt -> $exp_dir/models/$m"
    speechssl hub convert "$ckpt" "$exp_dir/models/$m"
  done
  done_stage 2
fi

results=()
for p in $probes; do
  for u in "${upstreams[@]}"; do
    for s in $seeds; do
      results+=("$(run_dir "$p" "${u%%=*}" "$s")/result.json")
    done
  done
done
if run_stage 3 --opt probes seeds random_init pixels preset ds_override --in "${models[@]}" "$corpus/scenes/train.tsv" \
    "$corpus/roads/train.tsv" "$corpus/digits/train.tsv" --out "${results[@]}"; then
  o_args=()
  for o in "${ds_override[@]+"${ds_override[@]}"}"; do
    o_args+=(-o "$o")
  done
  log "Stage 3: probes ($probes) x upstreams (${upstreams[*]}) x seeds ($seeds) -> $exp_dir/probes"
  for p in $probes; do
    for u in "${upstreams[@]}"; do
      name=${u%%=*} spec=${u#*=}
      for s in $seeds; do
        dir=$(run_dir "$p" "$name" "$s")
        l_args=
        if [[ $(probe_args "$p") == *image_seg* ]]; then
          seg_layer_for "$name" "$spec"
          l_args=${seg_layer[$name]}
        fi
        # what this run is made from: its options, and the model's weights when it has some
        inputs="$(probe_args "$p")${l_args:+ $l_args} spec=$spec seed=$s ${ds_override[*]-}"
        [ -f "$spec/model.safetensors" ] && inputs+=" weights=$(sha256sum < "$spec/model.safetensors" | cut -c1-64)"
        if [ -f "$dir/result.json" ] && [ "$stage_why" != forced ] && [ -f "$dir.inputs" ] \
            && [ "$(cat "$dir.inputs")" = "$inputs" ]; then
          log "  $p / $name / seed $s: $dir/result.json is up to date, keeping it"
          continue
        fi
        if [ -e "$dir" ] && { [ "$stage_mode" = fresh ] || [ ! -f "$dir.inputs" ] \
            || [ "$(cat "$dir.inputs")" != "$inputs" ]; }; then
          rm -rf -- "$dir"
        fi
        rm -f "$dir.inputs"
        u_args=(-u "$spec")
        [ -e "$spec" ] && u_args=(-u "$name" -k "$spec")
        mkdir -p "$(dirname "$dir")"
        t0=$SECONDS
        # shellcheck disable=SC2046  # probe_args is words on purpose
        speechssl downstream -m train $(probe_args "$p") $l_args "${u_args[@]}" --data "$corpus" -p "$dir" -a --seed "$s" \
          "${o_args[@]+"${o_args[@]}"}" > "$dir.log" 2>&1 \
          || { tail -n 20 "$dir.log" >&2; die "probe $p / $name (seed $s) failed; full log: $dir.log"; }
        [ -s "$dir/result.json" ] || die "probe $p / $name (seed $s) wrote no $dir/result.json; see $dir.log"
        printf '%s\n' "$inputs" > "$dir.inputs"
        log "  $p / $name / seed $s ($(( SECONDS - t0 )) s): $(tail -n 1 "$dir.log")"
      done
    done
  done
  done_stage 3
fi

if run_stage 4 --in "${results[@]}" --out "$exp_dir/report/report.md"; then
  clear_outputs "$exp_dir/report"
  # one report per probe: the report's table is task x upstream, and the probes of one task
  # (image_probe on shape, colour, ...) must not be pooled as if they were seeds of one cell
  for p in $probes; do
    log "Stage 4: report of $p -> $exp_dir/report/$p"
    speechssl downstream report "$exp_dir/probes/$p" --out "$exp_dir/report/$p"
  done
  {
    echo "# Image probes: $methods ($preset)$([ "$pixels" = no ] || echo " next to raw pixels")$([ "$random_init" = none ] || echo " and a random-init backbone")"
    echo
    echo "Corpus: $corpus ($corpus_preset, seed $corpus_seed); seeds: $seeds."
    for p in $probes; do
      echo
      echo "## $p ($(probe_args "$p"))"
      echo
      # headings one level down; figure links into report/<probe>/, where the figures are
      sed -e 's/^#/##/' -e "s|](\([^)/]*\.png\))|]($p/\1)|g" "$exp_dir/report/$p/report.md"
    done
  } > "$exp_dir/report/report.md.tmp"
  mv "$exp_dir/report/report.md.tmp" "$exp_dir/report/report.md"
  cat "$exp_dir/report/report.md"
  done_stage 4
fi

log "finished stages $stage..$stop_stage in $exp_dir"
