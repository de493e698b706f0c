#!/usr/bin/env bash
# Mining of the component study (docs/study.md): per set (grad_x_act, contrast, ig) and data set, two shards in
# parallel, then a merge pass that computes nothing new and writes neurons.json. Resumable:
# rerun it after a kill. Usage: bash benchmarks/study_mine.sh [OUT=runs/study/mining]
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/study/mining}
BIN=${BIN:-.venv/bin}
SHARED=${NEURORIT_SHARED_DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
common="--split train --limit 100 --n-passages 1 --max-prompt-tokens 896 --n-distractors 10 --threshold 0.05 --frequency 0.5"
for method in grad_x_act contrast ig; do
  case $method in
    # IG under bf16 autocast (fp32 sums): the amendment of docs/study.md, made before any IG set existed
    ig) m="--method ig --steps 8 --alpha-chunk 8 --positions skip_first --precision bf16" ;;
    grad_x_act) m="--method grad_x_act --positions skip_first" ;;
    # the screen's contrast recipe: its own prompt length and top-k selection (declared in docs/study.md)
    contrast) m="--method grad_x_act --irrelevant-definition contrast --noisy-setting noise=0.8 --selection topk --top-k 40 --n-passages 5 --max-prompt-tokens 512" ;;
  esac
  for ds in embedded nq; do
    if [ $ds = embedded ]; then d="--data embedded:1000"
    else d="--data $SHARED/lost_in_the_middle/nq-open-oracle.jsonl.gz --format dpr"; fi
    out=$OUT/$method/$ds
    # a finished folder is left as it is: rewriting its neurons.json would change the study's inputs
    if [ -f "$out/neurons.json" ]; then continue; fi
    mkdir -p "$out"
    for r in 0 1; do
      nice -n 19 "$BIN/neurorit" mine --out "$out" $d $common $m --shard $r/2 --no-progress > "$out/shard$r.log" 2>&1 &
    done
    wait
    nice -n 19 "$BIN/neurorit" mine --out "$out" $d $common $m --no-progress > "$out/merge.log" 2>&1
    echo "$(date -u +%FT%TZ) $method $ds rc=$?" >> "$OUT/status.log"
  done
done
