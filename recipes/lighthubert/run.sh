#!/usr/bin/env bash
# LightHuBERT (Wang et al., Interspeech 2022): a once-for-all supernet distilled from a HuBERT
# teacher in two stages, its subnets exported as standalone upstreams, and a downstream sweep.
#
#   bash recipes/lighthubert/run.sh [--teacher SRC] [--preset tiny|small|base] [--stage N] [--stop-stage M]
#                                   [--exp-dir DIR] [--data-dir DIR] [--eval-data DIR] [--ngpu N]
#                                   [--corpus-preset tiny|small|base] [--corpus-seed N]
#                                   [--subnets "max min NAME=SPEC ..."] [--repeats N]
#                                   [--tasks "pr ks sid er asr"] [--seeds "1"] [--nj N]
#                                   [-- KEY=VALUE ...]
#
#   --teacher    the HuBERT teacher: a model directory, a training or fairseq checkpoint, or the
#                output directory of recipes/hubert/run.sh (its iter2/checkpoint_last.pt; its
#                corpus/pretrain is then the default --data-dir). Default exp/hubert_<preset>
#                (exp/hubert_tiny for tiny, exp/hubert_base for small and base)
#   --preset     the student's search space: tiny (a 128-wide, 3-layer supernet for CPU), small or
#                base (LightHuBERT's spaces on the 768-wide, 12-layer supernet)
#   --data-dir   fairseq manifests {train,valid}.tsv of 16 kHz audio to distil on (default: the
#                teacher recipe's corpus/pretrain, else a corpus stage 0 synthesizes)
#   --corpus-preset / --corpus-seed  the embedded corpus stage 0 synthesizes when there is no
#                --data-dir (default: the preset's size, tiny for tiny and base otherwise; seed 1)
#   --eval-data  the corpus the downstream tasks train and test on (default: the seed-0 corpus of
#                --corpus-preset's size, synthesized in stage 0 under <exp-dir>/eval_corpus)
#   --subnets    the subnets stage 4 exports: words NAME (max, min, small, base) or NAME=SPEC with
#                SPEC as `speechssl hub info --subnet` takes it, e.g. half=embed=256,heads=4,ffn=3,layers=10
#                (default tiny: "max min w64=embed=64,heads=2,ffn=4,layers=3 l2=embed=128,heads=2,ffn=4,layers=2";
#                small: "max min small"; base: "max min base")
#   --repeats N  timed CPU forwards of one 1 s waveform per subnet in the stage-4 table (default 5)
#   --tasks      downstream tasks of stage 5 (default "pr ks sid er asr"); --seeds, --nj as
#                recipes/superb/run.sh
#   --ngpu N     distil under torchrun on N GPUs (default: one process, GPU if there is one)
#   -- KEY=VALUE ... distillation config overrides for both stages; prefixed with stage1: or
#                stage2: for one, e.g. -- trainer.optim.lr=1e-3 stage2:trainer.max_updates=4000
#
# Stages and their outputs (all under --exp-dir, default exp/lighthubert_<preset>):
#   0  corpus        corpus/ (when there is no --data-dir and the teacher brings none) and
#                    eval_corpus/ (seed 0; skipped with --eval-data)
#   1  teacher       teacher/  the teacher as a speechssl model directory (`speechssl hub convert`),
#                    which the distillation keeps by reference (path + sha256)
#   2  distil 1      distil/checkpoint_last.pt ..., student/: stage 1, the full student (the search
#                    space's largest subnet) on the mean of the teacher's last 8 layers, L1 on masked frames
#   3  distil 2      supernet_train/checkpoint_last.pt ..., supernet/: stage 2 from student/, a subnet
#                    drawn uniformly per update
#   4  export        subnets/<NAME>/ (standalone model directories holding only that subnet's weights,
#                    `speechssl hub convert --subnet`); subnets.txt / subnets.json: params, MACs per
#                    second of audio and CPU forward time of each subnet and of the whole supernet,
#                    teacher.txt / teacher.json: the teacher's params and forward time
#   5  downstream    superb/downstream/<task>_{teacher,lh-<NAME>}/ (recipes/superb/run.sh on the
#                    eval corpus), superb/report/report.md
#
# The README's comparison (pretrain on the seed-1 small corpus, evaluate on the seed-0 one):
#   bash recipes/hubert/run.sh --preset tiny --corpus-preset small --corpus-seed 1 --exp-dir exp/hubert_tiny_small1 ...
#   bash recipes/lighthubert/run.sh --teacher exp/hubert_tiny_small1 --corpus-preset small \
#       --exp-dir exp/lighthubert_tiny_small1 -- trainer.max_updates=4000
#
# Stages as in Kaldi/ESPnet: --stage N..--stop-stage M run; stages before N are taken as done
# (their outputs must exist). A finished stage leaves <exp-dir>/.stage<N>.done (its wall time,
# options and input digests) and is skipped on a rerun while those are unchanged; a stage whose
# options or inputs changed, or that --stage names, is redone (a redone distillation moves the
# earlier run to <dir>.prev/), and so is every later stage. Distillation and downstream runs
# resume when interrupted.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
# shellcheck source=recipes/lib.sh
source "$root/recipes/lib.sh"

stage=0
stop_stage=5
preset=tiny
teacher=
exp_dir=
data_dir=
eval_data=
corpus_preset=
corpus_seed=1
subnets=
repeats=5
tasks="pr ks sid er asr"
seeds="1"
nj=2
ngpu=0
parse_options "$@"

check_uint stage stop_stage nj ngpu corpus_seed repeats
[ "$nj" -ge 1 ] || die "--nj must be at least 1, got $nj"
[ "$repeats" -ge 1 ] || die "--repeats must be at least 1, got $repeats"
case "$preset" in
  tiny)
    : "${corpus_preset:=tiny}" "${teacher:=exp/hubert_tiny}"
    : "${subnets:=max min w64=embed=64,heads=2,ffn=4,layers=3 l2=embed=128,heads=2,ffn=4,layers=2}" ;;
  small|base)
    : "${corpus_preset:=base}" "${teacher:=exp/hubert_base}" "${subnets:=max min $preset}" ;;
  *) die "--preset must be tiny, small or base, got '$preset'" ;;
esac
case "$corpus_preset" in
  tiny|small|base) ;;
  *) die "--corpus-preset must be tiny, small or base, got '$corpus_preset'" ;;
esac
[[ $seeds =~ ^[0-9]+( [0-9]+)*$ ]] || die "--seeds must be non-negative integers separated by spaces, got '$seeds'"
# The tiny trainer preset's batches hold 160000 samples (10 s); crop training utterances to that so
# corpora with longer items (the small corpus has three) train instead of being refused.
if [ "$preset" = tiny ]; then
  stage1_overrides=(task.max_sample_size=160000)
  stage2_overrides=(task.max_sample_size=160000)
else
  stage1_overrides=()
  stage2_overrides=()
fi
for o in "${extra_args[@]+"${extra_args[@]}"}"; do
  [[ $o =~ ^(stage[12]:)?[A-Za-z_][A-Za-z0-9_.]*=.*$ ]] \
    || die "distillation overrides after -- must be KEY=VALUE or stage1:/stage2:KEY=VALUE, got '$o'"
  case "$o" in
    stage1:*) stage1_overrides+=("${o#stage1:}") ;;
    stage2:*) stage2_overrides+=("${o#stage2:}") ;;
    *) stage1_overrides+=("$o"); stage2_overrides+=("$o") ;;
  esac
done
# subnet NAME → SPEC (a bare NAME is its own spec)
subnet_names=()
declare -A subnet_spec=()
for w in $subnets; do
  name=${w%%=*}
  spec=${w#*=}
  case "$name" in
    embed|heads|ffn|layers) die "--subnets: name the explicit subnet '$w' (NAME=$w)" ;;
  esac
  [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "--subnets: '$name' is not a name (letters, digits, . _ -)"
  [ -z "${subnet_spec[$name]+x}" ] || die "--subnets: '$name' given twice"
  subnet_names+=("$name")
  subnet_spec[$name]=$spec
done
[ "${#subnet_names[@]}" -gt 0 ] || die "--subnets: give at least one subnet"

: "${exp_dir:=exp/lighthubert_$preset}"

# The teacher: a HuBERT recipe's output directory (its iteration-2 model and corpus), or a model.
teacher_src=$teacher
teacher_corpus=
if [ -d "$teacher" ] && [ -f "$teacher/iter2/checkpoint_last.pt" ]; then
  teacher_src=$teacher/iter2/checkpoint_last.pt
  [ -f "$teacher/corpus/pretrain/train.tsv" ] && teacher_corpus=$teacher/corpus/pretrain
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ] && [ ! -e "$teacher_src" ]; then
  die "--teacher $teacher: no such model directory, checkpoint or HuBERT recipe output (iter2/checkpoint_last.pt);" \
      "run 'bash recipes/hubert/run.sh --preset ${preset/small/base}' first, or pass --teacher"
fi
if [ -z "$data_dir" ] && [ -n "$teacher_corpus" ]; then
  data_dir=$teacher_corpus
fi
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

use_venv
mkdir -p "$exp_dir"
teacher_dir=$exp_dir/teacher
ckpt1=$exp_dir/distil/checkpoint_last.pt
ckpt2=$exp_dir/supernet_train/checkpoint_last.pt

# pretrain ARGS...: `speechssl pretrain`, under torchrun with --ngpu N > 1.
pretrain() {
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$ngpu" "$(command -v speechssl)" pretrain "$@"
  else
    speechssl pretrain "$@"
  fi
}

log "LightHuBERT recipe: preset=$preset teacher=$teacher_src exp_dir=$exp_dir data=$data_dir eval=$eval_data" \
    "stages $stage..$stop_stage subnets: ${subnet_names[*]}"

s0=(--opt synth synth_eval corpus_preset corpus_seed --out "$data_dir/train.tsv" "$eval_data")
$synth || s0+=(--in "$data_dir/train.tsv" "$data_dir/valid.tsv")
if run_stage 0 "${s0[@]}"; then
  if $synth; then
    clear_outputs "$exp_dir/corpus"
    log "Stage 0: synthesize the $corpus_preset corpus (seed $corpus_seed) into $exp_dir/corpus"
    speechssl corpus synth --preset "$corpus_preset" --seed "$corpus_seed" --out "$exp_dir/corpus"
  else
    log "Stage 0: distilling on the manifests in $data_dir"
  fi
  if $synth_eval; then
    clear_outputs "$eval_data"
    log "Stage 0: synthesize the seed-0 $corpus_preset evaluation corpus into $eval_data"
    speechssl corpus synth --preset "$corpus_preset" --seed 0 --out "$eval_data"
  fi
  done_stage 0
fi

if run_stage 1 --in "$teacher_src" --out "$teacher_dir"; then
  clear_outputs "$teacher_dir"
  log "Stage 1: the teacher $teacher_src -> $teacher_dir"
  speechssl hub convert "$teacher_src" "$teacher_dir"
  done_stage 1
fi

if run_stage 2 --opt preset stage1_overrides --in "$teacher_dir" "$data_dir/train.tsv" "$data_dir/valid.tsv" \
    --out "$ckpt1" "$exp_dir/student"; then
  set_aside "$exp_dir/distil"
  clear_outputs "$exp_dir/student"
  log "Stage 2: distil the full $preset student from $teacher_dir on $data_dir -> $exp_dir/distil"
  pretrain --method lighthubert --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/distil" \
    task.teacher="$teacher_dir" task.stage=1 "${stage1_overrides[@]+"${stage1_overrides[@]}"}"
  speechssl hub convert "$ckpt1" "$exp_dir/student"
  done_stage 2
fi

if run_stage 3 --opt preset stage2_overrides --in "$teacher_dir" "$exp_dir/student" "$data_dir/train.tsv" \
    "$data_dir/valid.tsv" --out "$ckpt2" "$exp_dir/supernet"; then
  set_aside "$exp_dir/supernet_train"
  clear_outputs "$exp_dir/supernet"
  log "Stage 3: train the supernet from $exp_dir/student (a subnet per update) -> $exp_dir/supernet_train"
  pretrain --method lighthubert --preset "$preset" --data "$data_dir" --exp-dir "$exp_dir/supernet_train" \
    task.teacher="$teacher_dir" task.stage=2 task.init="$exp_dir/student" \
    "${stage2_overrides[@]+"${stage2_overrides[@]}"}"
  speechssl hub convert "$ckpt2" "$exp_dir/supernet"
  done_stage 3
fi

s4_outs=("$exp_dir/subnets.txt" "$exp_dir/subnets.json" "$exp_dir/teacher.txt" "$exp_dir/teacher.json")
for name in "${subnet_names[@]}"; do
  s4_outs+=("$exp_dir/subnets/$name")
done
if run_stage 4 --opt subnets repeats --in "$exp_dir/supernet" "$teacher_dir" --out "${s4_outs[@]}"; then
  clear_outputs "$exp_dir/subnets"
  info_args=()
  for name in "${subnet_names[@]}"; do
    log "Stage 4: subnet $name (${subnet_spec[$name]}) -> $exp_dir/subnets/$name"
    speechssl hub convert "$exp_dir/supernet" "$exp_dir/subnets/$name" --subnet "${subnet_spec[$name]}"
    info_args+=(--subnet "${subnet_spec[$name]}")
  done
  log "Stage 4: the subnet table (params, MACs per 1 s, CPU forward time of 1 s, median of $repeats)"
  for f in txt json; do
    json=()
    [ "$f" = json ] && json=(--json)
    speechssl hub info "$exp_dir/supernet" "${info_args[@]}" --time --repeats "$repeats" "${json[@]+"${json[@]}"}" \
      > "$exp_dir/subnets.$f.tmp"
    mv "$exp_dir/subnets.$f.tmp" "$exp_dir/subnets.$f"
    speechssl hub info "$teacher_dir" --time --repeats "$repeats" "${json[@]+"${json[@]}"}" > "$exp_dir/teacher.$f.tmp"
    mv "$exp_dir/teacher.$f.tmp" "$exp_dir/teacher.$f"
  done
  cat "$exp_dir/subnets.txt" "$exp_dir/teacher.txt" >&2
  done_stage 4
fi

s5_ins=("$teacher_dir")
for name in "${subnet_names[@]}"; do
  s5_ins+=("$exp_dir/subnets/$name")
done
if run_stage 5 --opt tasks seeds subnets --in "${s5_ins[@]}" --out "$exp_dir/superb/report/report.md"; then
  log "Stage 5: downstream tasks ($tasks) on the frozen teacher and subnets -> $exp_dir/superb"
  superb_args=(--data-dir "$eval_data" --upstream "teacher=$teacher_dir")
  for name in "${subnet_names[@]}"; do
    superb_args+=(--upstream "lh-$name=$exp_dir/subnets/$name")
  done
  superb_args+=(--tasks "$tasks" --seeds "$seeds" --nj "$nj" --exp-dir "$exp_dir/superb")
  # the sweep's own markers decide which heads to train again, unless this stage is redone on
  # purpose (--stage 5, or its marker deleted): then every head is retrained
  case "$stage_why" in
    forced|unmarked) bash "$root/recipes/superb/run.sh" --stage 1 "${superb_args[@]}" ;;
    *) bash "$root/recipes/superb/run.sh" "${superb_args[@]}" ;;
  esac
  done_stage 5
fi

log "finished stages $stage..$stop_stage in $exp_dir"
