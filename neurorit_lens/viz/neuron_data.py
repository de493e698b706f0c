"""What a neuron page shows, computed: activations over a data set's passages, the direct
logit effect, attribution statistics from mining, and selectivity.

Passages: every passage of every example (relevant, irrelevant, counterfactual) goes into
a prompt on its own with the question (the project's prompt path,
:func:`neurorit_lens.data.render_prompts`, with its token budget), followed by the gold
answer continuation. Each token gets a region: ``passage`` (the document line),
``question``, ``answer`` (the teacher-forced answer tokens) or ``other`` (instruction and
template).

Activations: one batched pass over all passages (right-padded batches) with hooks on the
MLP hook points of the needed layers only, each keeping only the chosen neurons' columns,
and the forward pass stopped after the last of them (``stop_at_layer``).

Direct logit effect of neuron ``(l, i)``: its output direction ``W_out[l, i]`` read by the
unembedding through the final norm, with the norm's scale frozen at its mean over the
answer positions (the last prompt token, which predicts the first answer token):
``effect = (center(W_out[l, i]) * w_ln / scale) @ W_U`` (``center`` only for LayerNorm; ``w_ln``
only when not folded into ``W_U``). It is the change of each logit per unit of activation,
ignoring paths through later layers.

>>> from neurorit_lens.models import tiny_model
>>> parse_neurons(tiny_model(), "L1N5,L0N3")
[Neuron(layer=1, index=5), Neuron(layer=0, index=3)]
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from neurorit_lens.data.schema import Label, QAExample, RAGInstance
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.neuron_sets import Neuron, NeuronSet
from neurorit_lens.tl_backend import Model

log = logging.getLogger(__name__)

__all__ = [
    "REGIONS",
    "PassageRecord",
    "attribution_stats",
    "collect_activations",
    "direct_logit_effect",
    "final_norm_scale",
    "parse_neurons",
    "passage_records",
    "selectivity",
]

REGIONS = ("passage", "question", "answer", "other")
LABELS = tuple(lab.value for lab in Label)
_LABEL = re.compile(r"^L(\d+)N(\d+)$")


def parse_neurons(model: Model, spec: str | Sequence[str | Neuron] | NeuronSet) -> list[Neuron]:
    """Neurons from ``"L14N512,L3N7"``, a list of labels/Neurons or a NeuronSet, checked against the model.

    Raises:
        ValueError: naming the label and the valid ranges, for a malformed or out-of-range label.
    """
    L, D = model.cfg.n_layers, model.cfg.d_mlp
    ranges = f"valid: L<layer>N<index> with layer 0..{L - 1} and index 0..{D - 1}"
    items = list(spec) if not isinstance(spec, str) else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ValueError(f"no neurons given ({ranges})")
    out = []
    for item in items:
        if isinstance(item, Neuron):
            n = item
        else:
            m = _LABEL.match(str(item).strip())
            if not m:
                raise ValueError(f"unknown neuron label {item!r}: {ranges}")
            n = Neuron(int(m.group(1)), int(m.group(2)))
        if not (0 <= n.layer < L and 0 <= n.index < D):
            raise ValueError(f"unknown neuron label {n.label!r} for this model ({L} layers x {D} neurons): {ranges}")
        out.append(n)
    return out


@dataclass
class PassageRecord:
    """One passage in a prompt of its own: tokens (prompt + answer) and each token's region."""

    example_id: str
    label: str
    kind: str
    tokens: list[int]
    regions: list[str]
    prompt_len: int

    @property
    def answer_pos(self) -> int:
        """The last prompt position (it predicts the first answer token)."""
        return self.prompt_len - 1


def _char_regions(prompt: str, passage_line: str, question: str) -> list[tuple[int, int, str]]:
    spans = []
    i = prompt.find(passage_line)
    if i >= 0:
        spans.append((i, i + len(passage_line), "passage"))
    j = prompt.rfind("Question: " + question)
    if j >= 0:
        j += len("Question: ")
        spans.append((j, j + len(question), "question"))
    return spans


def _token_regions(model: Model, prompt: str, ids: list[int], spans: list[tuple[int, int, str]]) -> list[str]:
    """Region of each prompt token, from the tokenizer's character offsets."""
    enc = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    off_ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    shift = len(ids) - len(off_ids)
    regions = ["other"] * len(ids)
    if shift < 0 or ids[shift:] != off_ids:
        log.debug("offsets do not align with the prompt tokens; regions left as 'other'")
        return regions
    for t, (a, b) in enumerate(offsets):
        for lo, hi, name in spans:
            if a < hi and b > lo:
                regions[t + shift] = name
                break
    return regions


def passage_records(model: Model, examples: Sequence[QAExample], limit: int | None = 500,
                    max_prompt_tokens: int = 512, template: str = "auto") -> list[PassageRecord]:
    """One :class:`PassageRecord` per passage of the examples, in order, at most ``limit``.

    Raises:
        ValueError: when the examples hold no passages.
    """
    from neurorit_lens.data import answer_continuation, render_prompts
    from neurorit_lens.data.prompts import format_passage
    from neurorit_lens.objective import encode_answer, encode_prompt

    insts = [RAGInstance(ex, "single", (p,)) for ex in examples for p in ex.passages]
    if limit is not None:
        insts = insts[:limit]
    if not insts:
        raise ValueError(f"no passages in the data ({len(examples)} examples): neuron pages need "
                         "examples with labelled passages")
    rendered = render_prompts(insts, model.tokenizer, template, max_prompt_tokens)
    out = []
    for prompt, inst in zip(rendered.prompts, rendered.instances, strict=True):
        ids = encode_prompt(model, prompt)
        a_ids = encode_answer(model, answer_continuation(inst.example.answer, rendered.template))
        p = inst.passages[0] if inst.passages else None
        spans = _char_regions(prompt, format_passage(1, p), inst.question) if p is not None else []
        regions = _token_regions(model, prompt, ids, spans) + ["answer"] * len(a_ids)
        src = insts[len(out)].passages[0]
        out.append(PassageRecord(inst.id, src.label.value, src.kind, ids + a_ids, regions, len(ids)))
    return out


def _batches(records: Sequence[PassageRecord], batch_size: int, pad: int):
    for s in range(0, len(records), batch_size):
        chunk = records[s:s + batch_size]
        T = max(len(r.tokens) for r in chunk)
        toks = torch.full((len(chunk), T), pad, dtype=torch.long)
        for b, r in enumerate(chunk):
            toks[b, :len(r.tokens)] = torch.tensor(r.tokens)
        yield chunk, toks


def collect_activations(model: Model, records: Sequence[PassageRecord], neurons: Sequence[Neuron],
                        batch_size: int = 16, site: str = "post") -> list[Float[torch.Tensor, "pos neuron"]]:
    """Activations of ``neurons`` at every token of every record, from one batched pass.

    Batches are right-padded (causal attention: padding never changes earlier positions).
    Hooks sit only on the MLP hook points of the needed layers and keep only the chosen
    neurons' columns (no full-layer cache, so hundreds of neurons over 30 layers stay small);
    the forward pass stops after the last needed layer (``stop_at_layer``).

    Returns:
        One ``[pos, neuron]`` float32 CPU tensor per record (its real tokens only).
    """
    if not neurons:
        raise ValueError("no neurons given")
    NeuronSet(neurons).check_model(model)
    layers = sorted({n.layer for n in neurons})
    cols = {layer: [k for k, n in enumerate(neurons) if n.layer == layer] for layer in layers}
    got: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):
        idx = torch.tensor([neurons[k].index for k in cols[layer]])

        def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook) -> None:
            got[layer] = act[..., idx.to(act.device)].detach().float().cpu()

        return hook

    hooks = [(mlp_hook_name(layer, site), make_hook(layer)) for layer in layers]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    out: list[torch.Tensor] = []
    with torch.no_grad(), neuron_hooks(model, hooks):
        for chunk, toks in _batches(records, batch_size, pad):
            model(toks.to(model.cfg.device), stop_at_layer=layers[-1] + 1)
            acts = torch.empty(toks.shape + (len(neurons),))
            for layer in layers:
                acts[..., cols[layer]] = got[layer]
            out += [acts[b, :len(r.tokens)] for b, r in enumerate(chunk)]
    return out


def final_norm_scale(model: Model, records: Sequence[PassageRecord], n: int = 32, batch_size: int = 16) -> float:
    """Mean scale of the final norm (``ln_final.hook_scale``) at the answer position of up to ``n`` records.

    1.0 for a model without a final norm.
    """
    hook = "ln_final.hook_scale"
    if hook not in model.hook_dict:
        return 1.0
    vals = []
    with torch.no_grad():
        for chunk, toks in _batches(list(records[:n]), batch_size, 0):
            _, cache = model.run_with_cache(toks.to(model.cfg.device), names_filter=lambda name: name == hook)
            sc = cache[hook].float().cpu().reshape(len(chunk), toks.shape[1])
            vals += [float(sc[b, r.answer_pos]) for b, r in enumerate(chunk)]
    return float(np.mean(vals)) if vals else 1.0


def direct_logit_effect(model: Model, neuron: Neuron, scale: float = 1.0) -> Float[torch.Tensor, "d_vocab"]:
    """Change of each logit per unit activation of ``neuron`` through the final norm and ``W_U``.

    ``(center(W_out[l, i]) * w_ln / scale) @ W_U``: centering for LayerNorm models, ``w_ln``
    when the norm's weight is not folded into ``W_U``.
    """
    w = model.W_out[neuron.layer, neuron.index].detach().float()
    if str(model.cfg.normalization_type).startswith("LN"):
        w = w - w.mean()
    ln_w = getattr(model.ln_final, "w", None)
    if ln_w is not None:
        w = w * ln_w.detach().float()
    return ((w / scale) @ model.W_U.detach().float()).cpu()


def attribution_stats(scores: Float[torch.Tensor, "n layer d_mlp"] | None, neuron: Neuron,
                      threshold: float | None = None) -> dict[str, Any]:
    """Mean, percentile-bootstrap 95% interval (1000 resamples, seed 0) and n of a neuron's
    per-example attribution; with ``threshold``, the fraction of examples above it."""
    from neurorit_lens.statistics import bootstrap_ci

    if scores is None or scores.shape[0] == 0:
        return {"n": 0, "mean": math.nan, "ci": (math.nan, math.nan)}
    v = scores[:, neuron.layer, neuron.index].double().numpy()
    out: dict[str, Any] = {"n": int(v.size), "mean": float(v.mean()), "ci": bootstrap_ci(v)}
    if threshold is not None:
        out["frac_above"] = float((v > threshold).mean())
    return out


def passage_means(records: Sequence[PassageRecord], acts: Sequence[torch.Tensor], k: int) -> dict[str, list[float]]:
    """Per label, the mean activation of neuron column ``k`` over each passage's passage-region tokens."""
    out: dict[str, list[float]] = {}
    for r, a in zip(records, acts, strict=True):
        mask = torch.tensor([g == "passage" for g in r.regions])
        if mask.any():
            out.setdefault(r.label, []).append(float(a[mask, k].mean()))
    return out


def selectivity(means: Mapping[str, Sequence[float]], a: str = "relevant", b: str = "irrelevant") -> float:
    """Cohen's d of per-passage mean activation, ``a`` vs ``b`` passages (pooled SD; nan if undefined).

    >>> round(selectivity({"relevant": [2.0, 4.0], "irrelevant": [0.0, 2.0]}), 4)
    1.4142
    """
    x, y = np.asarray(means.get(a, []), float), np.asarray(means.get(b, []), float)
    if x.size < 2 or y.size < 2:
        return math.nan
    pooled = ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)
    return float((x.mean() - y.mean()) / math.sqrt(pooled)) if pooled > 0 else math.nan
