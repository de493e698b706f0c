"""Offline circuitsvis neuron views: which tokens fire the chosen neurons, and which carry their attribution.

Two views, both drawn by circuitsvis' React components:

- ``TextNeuronActivations`` over the relevant and the irrelevant passages of one example:
  the activation of each chosen MLP neuron (``blocks.{l}.mlp.hook_post``) at every token,
  read from one ``run_with_cache`` restricted (``names_filter``) to the needed layers.
- ``ColoredTokens`` of the per-token attribution of a neuron *set*: gradient x activation
  of F (the answer log-prob, teacher-forced) at each position, summed over the set's
  neurons, i.e. sum_{(l,i) in S} a_{p,l,i} * dF/da_{p,l,i}. Summed over positions this is
  the set's ``grad_x_act`` attribution; per position it shows where in the prompt the set's
  contribution to the answer is made.

Offline by construction: the panels and pages come from :mod:`neurorit_lens.viz.panels`,
which embeds circuitsvis' inline bundle (no CDN). ``CVPanel``, ``NeuronView``,
``page_html`` and ``circuitsvis_bundle`` are re-exported here.

>>> from neurorit_lens.models import tiny_model
>>> from neurorit_lens.neuron_sets import Neuron
>>> model = tiny_model()
>>> view = activation_view(model, {"demo": ["The capital of Zarnia is Velmor."]}, [Neuron(0, 3), Neuron(1, 5)])
>>> "CircuitsVis.render" in view.html() and "unpkg.com" not in view.html()
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from neurorit_lens.data.schema import Passage, QAExample
from neurorit_lens.hooks import mlp_hook_name, mlp_names_filter, neuron_hooks
from neurorit_lens.neuron_sets import Neuron, NeuronSet
from neurorit_lens.objective import AnswerBatch, answer_target, tokenize_with_answers
from neurorit_lens.tl_backend import Model
from neurorit_lens.viz.panels import CVPanel, NeuronView, circuitsvis_bundle, page_html

__all__ = [
    "CVPanel",
    "NeuronView",
    "activation_view",
    "attribution_view",
    "circuitsvis_bundle",
    "example_view",
    "mlp_activations",
    "page_html",
    "answer_text",
    "passage_prompt",
    "str_tokens",
    "token_attribution",
    "top_neurons",
    "view_examples",
]

# --------------------------------------------------------------------------------------
# activations and per-token attribution (TL hooks)
# --------------------------------------------------------------------------------------
NeuronsLike = NeuronSet | Sequence[Neuron] | Sequence[tuple[int, int]] | Sequence[str]


def _as_neurons(neurons: NeuronsLike) -> list[Neuron]:
    """A list of :class:`Neuron` from a NeuronSet, Neurons, (layer, index) pairs or labels."""
    if isinstance(neurons, NeuronSet):
        return list(neurons)
    out = []
    for n in neurons:
        if isinstance(n, Neuron):
            out.append(n)
        elif isinstance(n, str):
            out.append(Neuron.from_label(n))
        else:
            layer, index = n
            out.append(Neuron(int(layer), int(index)))
    return out


def _check_neurons(model: Model, neurons: Sequence[Neuron]) -> None:
    if not neurons:
        raise ValueError("no neurons given")
    NeuronSet(neurons).check_model(model)


def str_tokens(model: Model, tokens: Int[torch.Tensor, "pos"]) -> list[str]:
    """The tokens as strings (TL's ``to_str_tokens``), for display."""
    return list(model.to_str_tokens(tokens.reshape(-1)))


def mlp_activations(
    model: Model,
    tokens: Int[torch.Tensor, "batch pos"],
    neurons: NeuronsLike,
    site: str = "post",
) -> Float[torch.Tensor, "batch pos neuron"]:
    """Activations of the chosen neurons at every position, in the order given.

    One ``run_with_cache`` whose cache holds only the MLP hooks of the layers involved
    (``names_filter``), stopped after the last of them (``stop_at_layer``).

    Args:
        model: a HookedTransformer.
        tokens: token ids ``[batch, pos]``.
        neurons: the neurons (NeuronSet, Neurons, (layer, index) pairs or ``L{l}N{i}`` labels).
        site: ``post`` (default) or ``pre``.

    Returns:
        ``[batch, pos, neuron]`` float32 activations on the CPU.
    """
    ns = _as_neurons(neurons)
    _check_neurons(model, ns)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    layers = sorted({n.layer for n in ns})
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=mlp_names_filter(layers, site),
                                        stop_at_layer=layers[-1] + 1)
    cols = [cache[mlp_hook_name(n.layer, site)][..., n.index] for n in ns]
    return torch.stack(cols, dim=-1).float().cpu()


def token_attribution(
    model: Model,
    batch: AnswerBatch,
    neurons: NeuronsLike,
    site: str = "post",
    target: str = "logprob",
    per_neuron: bool = False,
) -> Float[torch.Tensor, "batch pos"] | Float[torch.Tensor, "batch pos neuron"]:
    """Per-token gradient x activation of F, summed over a neuron set.

    ``attr[b, p] = sum_{(l,i) in S} a[b,p,l,i] * dF_b/da[b,p,l,i]`` where F is the answer
    target of :func:`neurorit_lens.objective.answer_target` (teacher-forced log-prob of the
    gold answer by default). Gradients are total derivatives: a zero ``delta`` that
    requires grad is added at each needed hook (``act + delta``), so paths through later
    layers count, and only these deltas are differentiated (no parameter gradients).
    Padded positions get 0.

    Args:
        model: a HookedTransformer.
        batch: prompt + answer tokens from :func:`neurorit_lens.objective.tokenize_with_answers`.
        neurons: the neuron set S.
        site: ``post`` or ``pre``.
        target: ``logprob`` | ``prob`` | ``logit`` | ``logit_diff``.
        per_neuron: return ``[batch, pos, neuron]`` (in the order of ``neurons``) instead of the sum.

    Returns:
        ``[batch, pos]`` (or ``[batch, pos, neuron]``) float32 on the CPU.
    """
    ns = _as_neurons(neurons)
    _check_neurons(model, ns)
    by_layer: dict[int, list[int]] = {}
    for n in ns:
        by_layer.setdefault(n.layer, []).append(n.index)
    acts: dict[int, torch.Tensor] = {}
    deltas: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook) -> torch.Tensor:
            delta = torch.zeros_like(act, requires_grad=True)
            acts[layer], deltas[layer] = act.detach(), delta
            return act + delta

        return hook

    fwd = [(mlp_hook_name(layer, site), make_hook(layer)) for layer in sorted(by_layer)]
    tokens = batch.tokens.to(model.cfg.device)
    with torch.enable_grad(), neuron_hooks(model, fwd):
        logits = model(tokens)
        F = answer_target(logits, batch.to(logits.device), target)
        layers = sorted(by_layer)
        grads = torch.autograd.grad(F.sum(), [deltas[layer] for layer in layers], allow_unused=True)
    grad_of = {layer: (g if g is not None else torch.zeros_like(acts[layer]))
               for layer, g in zip(layers, grads, strict=True)}
    cols = [(acts[n.layer][..., n.index] * grad_of[n.layer][..., n.index]).float() for n in ns]
    out = torch.stack(cols, dim=-1).cpu()
    pos = torch.arange(out.shape[1])
    valid = pos[None, :] < batch.lengths[:, None].cpu()
    out = out * valid[..., None]
    return out if per_neuron else out.sum(-1)


# --------------------------------------------------------------------------------------
# choosing neurons and building prompts
# --------------------------------------------------------------------------------------
def top_neurons(
    neurons: NeuronSet,
    scores: Float[torch.Tensor, "layer d_mlp"] | None = None,
    k: int = 5,
) -> list[Neuron]:
    """The ``k`` neurons of a set with the highest score (mean attribution); without scores the first ``k``.

    Args:
        neurons: the set to choose from.
        scores: ``[layer, d_mlp]`` scores, e.g. mean attribution over the mining examples.
        k: how many.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ns = list(neurons)
    if scores is not None:
        if scores.ndim != 2:
            raise ValueError(f"scores must be [layer, d_mlp], got shape {tuple(scores.shape)}")
        ns.sort(key=lambda n: -float(scores[n.layer, n.index]))
    return ns[:k]


def passage_prompt(model: Model, example: QAExample, passages: Sequence[Passage], template: str = "auto",
                   max_prompt_tokens: int = 512) -> str:
    """The project's RAG prompt for these passages, through the one prompt path.

    :func:`neurorit_lens.data.build.render_instances` with the budget rule of every stage
    (``max_prompt_tokens`` capped at the model's context; non-gold passages cut from the
    end, the relevant-labelled ones counting as gold, as in every stage).
    ``template`` ``auto`` picks the chat template when the tokenizer has one, as evaluation does.
    """
    from neurorit_lens.data import Label, RAGInstance
    from neurorit_lens.data.build import prompt_budget, render_instances

    budget = prompt_budget(max_prompt_tokens, model.cfg.n_ctx)
    gold = tuple(i for i, p in enumerate(passages) if p.label == Label.RELEVANT)
    inst = RAGInstance(example, "", tuple(passages), gold)
    return render_instances([inst], model.tokenizer, template, budget).prompts[0]


def answer_text(model: Model, answer: str, template: str = "auto") -> str:
    """The answer continuation teacher-forced after a prompt of this template (`` answer`` for plain)."""
    from neurorit_lens.data import answer_continuation, resolve_template

    return answer_continuation(answer, resolve_template(model.tokenizer, template))


PromptFn = Callable[[QAExample, Sequence[Passage]], str]


def _neuron_labels(groups: Mapping[str, Sequence[Neuron]]) -> tuple[list[Neuron], list[str]]:
    flat, labels = [], []
    for name, ns in groups.items():
        for n in ns:
            flat.append(n)
            labels.append(f"{n.label} ({name})" if name else n.label)
    return flat, labels


def _groups(neurons: NeuronsLike | Mapping[str, NeuronsLike]) -> dict[str, list[Neuron]]:
    if isinstance(neurons, Mapping):
        return {str(k): _as_neurons(v) for k, v in neurons.items()}
    return {"": _as_neurons(neurons)}


# --------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------
def activation_view(
    model: Model,
    texts: Mapping[str, Sequence[str]],
    neurons: NeuronsLike | Mapping[str, NeuronsLike],
    site: str = "post",
    title: str = "Neuron activations",
    description: str = "",
    max_tokens: int = 512,
) -> NeuronView:
    """``TextNeuronActivations`` panels: one per group of texts, the chosen neurons in a drop-down.

    Args:
        model: a HookedTransformer.
        texts: panel title -> texts (each a sample in the panel's sample selector),
            e.g. ``{"relevant passages": [...], "irrelevant passages": [...]}``.
        neurons: the neurons, or set name -> neurons (labels then read ``L3N17 (R_excl)``).
        site: ``post`` or ``pre``.
        title: the view's title.
        description: a sentence under the title.
        max_tokens: texts are cut to this many tokens.

    Returns:
        A :class:`NeuronView`.
    """
    flat, labels = _neuron_labels(_groups(neurons))
    _check_neurons(model, flat)
    if not texts:
        raise ValueError("no texts given")
    panels = []
    for name, group in texts.items():
        if isinstance(group, str):
            group = [group]
        if not group:
            continue
        samples_tok, samples_act = [], []
        for text in group:
            toks = model.to_tokens(text, truncate=False)[:, :max_tokens]
            act = mlp_activations(model, toks, flat, site)[0]  # [pos, neuron]
            samples_tok.append(str_tokens(model, toks[0]))
            samples_act.append(act[:, None, :].tolist())  # [tokens x 1 x neurons]
        n = len(group)
        cap = ((f"{n} samples (pick one with 'Samples'); " if n > 1 else "")
               + f"pick a neuron with 'Neuron'; colour = its activation (blocks.<layer>.mlp.hook_{site}) "
               "at each token, hover a token for the value.")
        panels.append(CVPanel(
            "TextNeuronActivations",
            {"tokens": samples_tok, "activations": samples_act, "firstDimensionName": "Shown",
             "secondDimensionName": "Neuron", "firstDimensionLabels": [f"{len(flat)} chosen neurons"],
             "secondDimensionLabels": labels},
            title=name, caption=cap,
        ))
    return NeuronView(panels, title, description)


def attribution_view(
    model: Model,
    prompts: Mapping[str, tuple[str, str]],
    neurons: NeuronsLike | Mapping[str, NeuronsLike],
    site: str = "post",
    target: str = "logprob",
    title: str = "Per-token attribution",
    description: str = "",
    max_tokens: int = 512,
) -> NeuronView:
    """``ColoredTokens`` panels of :func:`token_attribution`: one per (prompt, neuron set).

    Args:
        model: a HookedTransformer.
        prompts: panel name -> (prompt, gold answer continuation, e.g. ``" Velmor"``).
        neurons: a neuron set, or set name -> set (one panel per set and prompt).
        site: ``post`` or ``pre``.
        target: the F of :func:`neurorit_lens.objective.answer_target`.
        title: the view's title.
        description: a sentence under the title.
        max_tokens: prompt + answer are cut (from the left of the prompt) to this many tokens.

    Returns:
        A :class:`NeuronView`; blue = the token's neurons raise F, red = they lower it.
    """
    groups = _groups(neurons)
    if not prompts:
        raise ValueError("no prompts given")
    panels = []
    for pname, (prompt, answer) in prompts.items():
        batch = tokenize_with_answers(model, [prompt], [answer], max_len=max_tokens)
        toks = str_tokens(model, batch.tokens[0, : int(batch.lengths[0])])
        for sname, ns in groups.items():
            if not ns:
                continue
            vals = token_attribution(model, batch, ns, site=site, target=target)[0, : len(toks)]
            m = float(vals.abs().max()) or 1.0
            total = float(vals.sum())
            label = f"{sname} " if sname else ""
            panels.append(CVPanel(
                "ColoredTokens",
                {"tokens": toks, "values": vals.tolist(), "minValue": -m, "maxValue": m,
                 "negativeColor": "#d62728", "positiveColor": "#1f77b4"},
                title=f"{label}attribution on {pname}",
                caption=(f"grad x act of log p(answer {answer.strip()!r}) summed over {len(ns)} neuron(s); "
                         f"blue raises, red lowers the answer; sum over tokens = {total:+.4g}, "
                         f"colour scale +/-{m:.3g}. Hover a token for its value."),
            ))
    return NeuronView(panels, title, description)


def _attribution_prompts(example: QAExample, rel: Sequence[Passage], irr: Sequence[Passage], prompt_fn: PromptFn,
                         answer: str) -> dict[str, tuple[str, str]]:
    """The relevant-context prompt and a noisy one (the gold passage in the middle of the irrelevant ones)."""
    prompts = {}
    if rel:
        prompts["the relevant-context prompt"] = (prompt_fn(example, rel), answer)
    if irr:
        noisy = list(irr)
        if rel:
            noisy.insert(len(noisy) // 2, rel[0])
        prompts["a noisy prompt (relevant among irrelevant)" if rel else "the irrelevant-only prompt"] = (
            prompt_fn(example, noisy), answer)
    return prompts


def example_view(
    model: Model,
    example: QAExample,
    sets: Mapping[str, NeuronSet],
    scores: Mapping[str, Float[torch.Tensor, "layer d_mlp"]] | None = None,
    k: int = 5,
    set_names: Sequence[str] = ("R_excl", "I_excl"),
    prompt_fn: PromptFn | None = None,
    template: str = "auto",
    n_irrelevant: int = 3,
    n_relevant: int = 2,
    site: str = "post",
    max_tokens: int = 384,
) -> NeuronView:
    """Both views for one example: the top neurons of each set over its relevant vs irrelevant
    passages, and each set's per-token attribution on a relevant and a noisy prompt.

    Args:
        model: a HookedTransformer.
        example: a QAExample with labelled passages.
        sets: set name -> NeuronSet (as in ``neurons.json``).
        scores: set name -> ``[layer, d_mlp]`` ranking scores (else the first ``k`` of each set).
        k: neurons shown per set.
        set_names: which sets to show (missing or empty ones are skipped).
        prompt_fn: builds a prompt from the example and an ordered list of passages
            (default: the project's template via :func:`passage_prompt`).
        template: ``auto`` | ``plain`` | ``chat`` for the default prompt and answer continuation.
        n_irrelevant: irrelevant passages used.
        n_relevant: relevant passages used (the data's first ones; the first is the gold).
        site: ``post`` or ``pre``.
        max_tokens: cut for each text.

    Returns:
        A :class:`NeuronView` titled with the example's question.
    """
    scores = scores or {}
    chosen = {}
    for name in set_names:
        s = sets.get(name)
        if s:
            chosen[name] = top_neurons(s, scores.get(name), k)
    if not chosen:
        raise ValueError(f"none of the sets {list(set_names)} has neurons (sets given: "
                         f"{ {n: len(s) for n, s in sets.items()} })")
    if prompt_fn is None:
        def prompt_fn(ex: QAExample, ps: Sequence[Passage]) -> str:
            return passage_prompt(model, ex, ps, template)
    rel = example.relevant[:n_relevant]
    irr = example.irrelevant[:n_irrelevant]
    if not rel and not irr:
        raise ValueError(f"example {example.id!r} has no labelled passages")
    texts = {}
    if rel:
        texts["Relevant passage(s)"] = [prompt_fn(example, [p]) for p in rel]
    if irr:
        texts["Irrelevant passages"] = [prompt_fn(example, [p]) for p in irr]
    q = example.question if len(example.question) < 90 else example.question[:87] + "..."
    act = activation_view(model, texts, chosen, site=site, title=f"Example {example.id}: {q}",
                          description=f"Gold answer: {example.answer!r}. Top {k} neurons of "
                                      f"{', '.join(chosen)} by mean attribution; each passage is shown "
                                      "in a prompt on its own with the question.",
                          max_tokens=max_tokens)
    prompts = _attribution_prompts(example, rel, irr, prompt_fn, answer_text(model, example.answer, template))
    attr = attribution_view(model, prompts, {n: sets[n] for n in chosen}, site=site, title="",
                            max_tokens=max_tokens)
    return act + attr


def view_examples(
    model: Model,
    examples: Iterable[QAExample],
    sets: Mapping[str, NeuronSet],
    **kwargs: Any,
) -> list[NeuronView]:
    """:func:`example_view` for several examples (those without labelled passages are skipped)."""
    out = []
    for ex in examples:
        if ex.relevant or ex.irrelevant:
            out.append(example_view(model, ex, sets, **kwargs))
    return out


