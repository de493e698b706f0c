#!/usr/bin/env bash
# One-GPU check, one script of at most 8 minutes: mining (grad_x_act, per-layer IG, joint IG), IG
# against Captum, a short Neuro-RIT training in bf16 and with fp32 weights under bf16 autocast with
# and without activation checkpointing, on SmolLM2; timings and peak GPU memory
# (torch.cuda.max_memory_allocated). The last line printed is one JSON summary.
# Usage: bash benchmarks/gpu_check.sh            (from the repository root; ~2-4 minutes on an H100)
#        OUT=/some/dir LIMIT_S=450 bash benchmarks/gpu_check.sh
#        bash benchmarks/gpu_check.sh --dry      (every phase on a tiny model on the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
LIMIT_S="${LIMIT_S:-450}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY="${PYTHON:-python3}"; fi
mkdir -p "$OUT"
echo "== environment"
"$PY" - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", "| bf16", torch.cuda.is_bf16_supported())
import transformer_lens, neurorit_lens
print("neurorit_lens", neurorit_lens.__version__)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
echo "== mining + training (limit ${LIMIT_S}s)"
timeout "$LIMIT_S" "$PY" -m benchmarks.gpu_check --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
echo "== done: $OUT/gpu_check.json"
