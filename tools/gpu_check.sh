#!/usr/bin/env bash
# The GPU check: the GPU tests and the GPU benchmarks in one run, one JSON line per step.
#
#   bash tools/gpu_check.sh              # on a machine with a CUDA device (under 8 minutes on one GPU)
#   bash tools/gpu_check.sh --dry-run    # print the steps as JSON lines and run nothing
#   PYTHON=/path/to/python bash tools/gpu_check.sh   # an interpreter with a CUDA torch
#
# Steps: the tests marked `gpu` (k-means, selective scan incl. mamba-ssm parity when installed,
# Trainer bf16/fp16, fbank, frozen upstreams), then the k-means, selective-scan and
# SSAMBA-vs-transformer benchmarks with --device cuda. Without a CUDA device it says so in one
# JSON line and runs the same steps on the CPU in their quick form (the fallback CI can afford),
# so the script itself stays tested. Each step prints {"gpu_check": <step>, "rc": ..., "seconds": ...}
# after the benchmark's own JSON line; the exit status is the number of failed steps.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

dry_run=0
case "${1:-}" in
  --dry-run) dry_run=1 ;;
  "") ;;
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x "$root/.venv/bin/python" ]; then
  py="$root/.venv/bin/python"
else
  py=python3
fi

cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$cuda" = 1 ]; then
  device=cuda
  quick=()
  "$py" -c 'import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({"gpu_check": "device", "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda}))'
else
  device=cpu
  quick=(--quick)
  echo '{"gpu_check": "device", "name": null, "note": "no CUDA device: running the CPU fallback (quick benchmarks; gpu tests skip)"}'
fi

steps=(
  "tests|$py -m pytest -q -p no:cacheprovider -m gpu tests"
  "kmeans|$py tools/bench/kmeans.py --device $device ${quick[*]:-}"
  "ssm|$py tools/bench/ssm.py --device $device ${quick[*]:-}"
  "ssamba_vs_transformer|$py tools/bench/ssamba_vs_transformer.py --device $device ${quick[*]:-}"
)

failed=0
for step in "${steps[@]}"; do
  name=${step%%|*}
  cmd=${step#*|}
  if [ "$dry_run" = 1 ]; then
    printf '{"gpu_check": "%s", "command": "%s", "device": "%s"}\n' "$name" "$cmd" "$device"
    continue
  fi
  start=$(date +%s)
  # shellcheck disable=SC2086  # the command is a word list on purpose
  $cmd
  rc=$?
  printf '{"gpu_check": "%s", "rc": %d, "seconds": %d, "device": "%s"}\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$device"
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
exit "$failed"
