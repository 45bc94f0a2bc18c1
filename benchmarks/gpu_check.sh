#!/usr/bin/env bash
# GPU check: on a CUDA machine, in under 5 minutes, the figures that matter there.
#
#   bash benchmarks/gpu_check.sh            # CUDA: run; no CUDA: say so, exit 0
#   bash benchmarks/gpu_check.sh --cpu      # the same runs on the CPU (to try the script)
#   bash benchmarks/gpu_check.sh --quick    # smaller sizes (about a minute on a GPU)
#
# Runs, one after the other, each printing its JSON line:
#   1. benchmarks/embed_throughput.py: end-to-end extraction over the forward pass alone,
#      readers from the machine's cores (engine.default_readers: all cores but one on a GPU);
#   2. benchmarks/whole_slide.py on a subset of a 16,384 px mosaic: the default composition
#      against x20 RGB alone (default_cost_ratio, tiles_per_s);
#   3. benchmarks/head_training.py at 10,000 and 200,000 embeddings (heads train on the CPU).
# The last stdout line is one JSON object: {"gpu": ..., "device": ..., "cpus": ...,
# "embed_throughput": {...}, "whole_slide": {...}, "head_training": {...}}. Without CUDA (and
# without --cpu) that line is {"gpu": false, "reason": ...} and nothing else runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

device=cuda
quick=0
for arg in "$@"; do
  case "$arg" in
    --cpu) device=cpu ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

found=$("$PY" - <<'EOF'
import json, os
try:
    import torch
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    reason = None if cuda else ("torch.cuda.is_available() is False (torch " + torch.__version__
                                + ", CUDA build " + str(torch.version.cuda) + ")")
except ImportError as exc:
    cuda, name, reason = False, None, f"torch is not importable: {exc}"
print(json.dumps({"gpu": cuda, "gpu_name": name, "reason": reason, "cpus": os.cpu_count()}))
EOF
)
if [ "$device" = cuda ] && [ "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["gpu"])' "$found")" != True ]; then
  echo "gpu_check: no GPU found here; nothing was measured (--cpu runs the same on the CPU)" >&2
  echo "$found"
  exit 0
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "$quick" = 1 ]; then
  samples=64; slide=8192; tiles=64; sizes=10000
else
  samples=384; slide=16384; tiles=512; sizes=10000,200000
fi
last_line() { tail -n 1 "$1"; }
# A benchmark exits 1 when it missed a target; its JSON line is still the figure wanted.
bench() { "$PY" "$@" || echo "[gpu_check] $1 exited $? (a missed target)" >&2; }

echo "[gpu_check] embedding throughput on $device" >&2
bench benchmarks/embed_throughput.py --device "$device" --samples "$samples" --skip-rss \
  --batch 32 > "$out/embed.txt"
echo "[gpu_check] whole slide (subset) on $device" >&2
bench benchmarks/whole_slide.py --device "$device" --size "$slide" --tiles "$tiles" \
  --batch 32 --repeats 1 > "$out/slide.txt"
echo "[gpu_check] head training (CPU, all cores)" >&2
bench benchmarks/head_training.py --sizes "$sizes" > "$out/heads.txt"

"$PY" - "$found" "$device" "$(last_line "$out/embed.txt")" "$(last_line "$out/slide.txt")" \
  "$(last_line "$out/heads.txt")" <<'EOF'
import json, sys
found, device, *lines = sys.argv[1:]
names = ("embed_throughput", "whole_slide", "head_training")
parts = {}
for name, line in zip(names, lines, strict=True):
    try:
        parts[name] = json.loads(line)
    except ValueError:
        sys.exit(f"gpu_check: {name} printed no JSON line (its output ends: {line[-200:]!r})")
print(json.dumps({**json.loads(found), "device": device, **parts}))
EOF
