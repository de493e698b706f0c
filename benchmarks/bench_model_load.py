"""Model load time: first load (GGUF dequantise + TL conversion + cache write) vs cached load,
and the HF-vs-HookedTransformer log-prob gap on a few prompts.

Each load runs in a fresh Python process against a fresh cache dir, so the first load
really converts and the second really reads the cache; the import time of the libraries
is measured separately and excluded. Threads and machine load are recorded beside the
timings.

    python -m benchmarks.bench_model_load --model smollm2-135m-instruct --out runs/bench_model_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import torch
from neurorit_lens.models import load_model
t1 = time.perf_counter()
m = load_model(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "threads": torch.get_num_threads()}))
"""

PROMPTS = [
    "The capital of France is",
    "Question: Who wrote Hamlet?\nAnswer:",
    "Document 1: The river Quell flows north through Velmor.\nQuestion: Which way does the Quell flow?",
]


def _child(model: str, cache: str) -> dict:
    env = {**os.environ, "NEURORIT_CACHE": cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def logprob_gap(model_name: str) -> float:
    """Max |log p_HT - log p_HF| over all positions and vocab, same weights and tokens."""
    import torch

    from neurorit_lens.models import default_cache_dir, load_model
    from neurorit_lens.models.gguf import gemma3_gguf_path, load_hf_from_gguf, smollm2_gguf_path

    path = smollm2_gguf_path() if model_name.startswith("smollm2") else gemma3_gguf_path(default_cache_dir())
    hf, tok = load_hf_from_gguf(path)
    ht = load_model(model_name)
    worst = 0.0
    texts = list(PROMPTS)
    if tok.chat_template:
        texts.append(tok.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], tokenize=False,
                                             add_generation_prompt=True) + "William Shakespeare")
    for text in texts:
        ids = torch.tensor([tok(text).input_ids])
        assert ht.to_tokens(text).tolist() == ids.tolist()
        with torch.no_grad():
            a = torch.log_softmax(hf(ids).logits, -1)
            b = torch.log_softmax(ht(ids), -1)
        worst = max(worst, (a - b).abs().max().item())
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    ap.add_argument("--no-logprob", action="store_true", help="skip the HF vs HT comparison")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="neurorit_bench_cache_") as cache:
        first = _child(args.model, cache)
        cached = _child(args.model, cache)
    res = {
        "model": args.model,
        "first_load_s": round(first["load_s"], 2),
        "cached_load_s": round(cached["load_s"], 2),
        "import_s": round(cached["import_s"], 2),
        "torch_threads": cached["threads"],
        "cpu_count": os.cpu_count(),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not args.no_logprob:
        res["max_abs_logprob_diff_hf_vs_ht"] = logprob_gap(args.model)
    print(json.dumps(res, indent=2))
    if args.out:
        from neurorit_lens.io import atomic_write_json

        atomic_write_json(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
