"""Helpers of the irrelevant-context (I) definitions and of activation-based statistics.

- :func:`activation_stats`: per-neuron mean activation (or mean ``|activation|``) over the
  real positions, or over the answer-predicting positions only, of teacher-forced prompt +
  answer batches. ``absolute=True`` over every position is the *activation scale* that
  normalised selection divides by; the mean at the answer-predicting positions of gold-only
  contexts is the value that ``constant`` deactivation holds a neuron at.
- :func:`wrong_answers`: the wrong answer ``y_wrong`` of the ``distracted`` definition: the
  data's counterfactual answer (``QAExample.meta["counterfactual_answer"]``, which the
  embedded set's counterfactual passage names) where one exists, otherwise the model's own
  greedy answer under the noisy prompt when it does not contain a gold answer. Examples the
  model answers correctly and that have no counterfactual answer are excluded and counted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from neurorit_lens.data import QAExample
from neurorit_lens.data.prompts import answer_continuation
from neurorit_lens.data.text import contains_answer
from neurorit_lens.hooks import mlp_hook_name, neuron_hooks
from neurorit_lens.models.generation import generate_greedy
from neurorit_lens.objective import AnswerBatch
from neurorit_lens.registry import Registry
from neurorit_lens.tl_backend import Model

WRONG_FIELD = "counterfactual_answer"
STAT_POSITIONS = ("all", "answer")

__all__ = ["I_DEFINITIONS", "STAT_POSITIONS", "WRONG_FIELD", "IDefinition", "activation_stats",
           "attach_wrong_answers", "load_answer_means", "orient_scores", "pair_with_relevant", "wrong_answers"]


def activation_stats(
    model: Model,
    batches: Iterable[AnswerBatch],
    site: str = "post",
    positions: str = "all",
    absolute: bool = False,
) -> Float[torch.Tensor, "layer d_mlp"]:
    """Mean activation (``absolute``: mean ``|activation|``) of every MLP neuron.

    Args:
        model: the HookedTransformer.
        batches: right-padded prompt + answer batches (:func:`neurorit_lens.objective.tokenize_with_answers`).
        site: ``post`` or ``pre``.
        positions: ``all`` real (unpadded) positions, or ``answer``: the positions that
            predict an answer token (``AnswerBatch.answer_mask``).
        absolute: average ``|activation|`` instead of the activation.

    Returns:
        ``[n_layers, d_mlp]`` float32 CPU tensor; every counted position weighs the same.
    """
    if positions not in STAT_POSITIONS:
        raise ValueError(f"positions must be one of {STAT_POSITIONS}, got {positions!r}")
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    sums = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    count = 0
    dev = next(model.parameters()).device
    for batch in batches:
        if positions == "answer":
            mask = batch.answer_mask
        else:
            mask = torch.arange(batch.tokens.shape[1])[None, :] < batch.lengths[:, None]
        mask = mask.to(dev)

        def make_hook(layer: int, mask: torch.Tensor = mask):
            def hook(act: Float[torch.Tensor, "batch pos d_mlp"], *, hook) -> None:
                a = act.detach().abs() if absolute else act.detach()
                sums[layer] += (a * mask.to(a.dtype)[..., None]).sum((0, 1)).double().cpu()

            return hook

        hooks = [(mlp_hook_name(layer, site), make_hook(layer)) for layer in range(n_layers)]
        with torch.no_grad(), neuron_hooks(model, hooks):
            model(batch.tokens.to(dev), stop_at_layer=n_layers)
        count += int(mask.sum())
    if count == 0:
        raise ValueError("activation_stats: no positions to average over")
    return (sums / count).float()


def _greedy_texts(model: Model, prompts: list[str], max_new_tokens: int) -> list[str]:
    return list(generate_greedy(model, prompts, max_new_tokens=max_new_tokens, show_progress=False))


def wrong_answers(
    model: Model,
    examples: Sequence[QAExample],
    ids: Sequence[str],
    prompts: Sequence[str],
    template: str,
    data_name: str,
    max_new_tokens: int = 16,
) -> tuple[dict[str, str], dict[str, Any]]:
    """``y_wrong`` continuation per example id (see module docstring), and what was excluded.

    Args:
        model: the model (greedy answers for examples without a counterfactual answer).
        examples: the QA examples (their ``meta`` and gold answers).
        ids, prompts: the noisy prompts, one per id.
        template: the resolved template (``plain`` or ``chat``) for the continuation string.
        data_name: named in the error message.
        max_new_tokens: greedy answer length.

    Raises:
        ValueError: when no example has a wrong answer (no counterfactual answers in the data
            and the model answers every noisy prompt correctly).
    """
    by_id = {ex.id: ex for ex in examples}
    out: dict[str, str] = {}
    need = []
    for i, p in zip(ids, prompts, strict=True):
        w = str(by_id[i].meta.get(WRONG_FIELD) or "").strip()
        if w and not contains_answer(w, by_id[i].answers):
            out[i] = answer_continuation(w, template)
        else:
            need.append((i, p))
    n_data = len(out)
    correct: list[str] = []
    if need:
        texts = _greedy_texts(model, [p for _, p in need], max_new_tokens)
        for (i, _), text in zip(need, texts, strict=True):
            ans = text.strip().split("\n")[0].strip()
            if ans and not contains_answer(ans, by_id[i].answers):
                out[i] = answer_continuation(ans, template)
            else:
                correct.append(i)
    if not out:
        raise ValueError(f"irrelevant_definition='distracted' found no wrong answer in {data_name!r}: no example "
                         f"has meta[{WRONG_FIELD!r}] (the data's counterfactual answer) and the model answers all "
                         f"{len(ids)} noisy prompts correctly")
    info = {"from_data": n_data, "from_model": len(out) - n_data, "model_correct": len(correct),
            "ids": correct}
    return out, info


def orient_scores(
    scores: Float[torch.Tensor, "n layer d_mlp"], ids: list[str], definition: str, paired: bool,
    scores_R: Float[torch.Tensor, "n_R layer d_mlp"], ids_R: list[str], excluded: dict[str, Any],
) -> tuple[Float[torch.Tensor, "n_out layer d_mlp"], list[str]]:
    """I scores oriented so that larger = more irrelevant-context.

    ``gold`` and ``distracted`` scores are kept; ``contrast`` ones are negated; ``negative``
    ones are negated, and with ``paired`` each becomes ``-(score - score_R)`` of the same id;
    ids without an R row are dropped and counted in ``excluded`` (reason ``unpaired``).
    """
    return I_DEFINITIONS.get(definition).orient(scores, ids, paired, scores_R, ids_R, excluded)


def _keep(scores, ids, paired, scores_R, ids_R, excluded):
    return scores, ids


def _negate(scores, ids, paired, scores_R, ids_R, excluded):
    return -scores, ids


def _orient_negative(scores, ids, paired, scores_R, ids_R, excluded):
    if not paired:
        return -scores, ids
    row_R = {i: k for k, i in enumerate(ids_R)}
    keep = [k for k, i in enumerate(ids) if i in row_R]
    unpaired = [i for i in ids if i not in row_R]
    excluded["unpaired"] = len(unpaired)
    excluded["ids"] = list(excluded["ids"]) + unpaired
    excluded["n"] = len(excluded["ids"])
    if not keep:
        return torch.zeros(0, *scores.shape[1:]), []
    diff = scores[keep] - scores_R[[row_R[ids[k]] for k in keep]]
    return -diff, [ids[k] for k in keep]


def attach_wrong_answers(model: Model, items: list[Any], examples: Sequence[QAExample], template: str,
                         data_name: str, excluded: dict[str, Any]) -> list[Any]:
    """``distracted``: attach ``y_wrong`` (``wrong``) to each mining item, with its tokens appended to
    ``tokens`` (the score fingerprint); drop (and count) those without one.

    Raises:
        ValueError: when no item is left (see :func:`wrong_answers`; also when every wrong
            answer tokenises to nothing).
    """
    from neurorit_lens.objective import encode_answer, tokenize_with_answers

    if not items:
        return items
    wrong, winfo = wrong_answers(model, examples, [it.id for it in items], [it.prompt for it in items],
                                 template, data_name)
    kept = []
    for it in items:
        w = wrong.get(it.id)
        if w is None or not encode_answer(model, w):
            excluded["ids"].append(it.id)
            continue
        wt = tokenize_with_answers(model, [it.prompt], [w], max_len=model.cfg.n_ctx).tokens[0].tolist()
        kept.append(dataclasses.replace(it, tokens=it.tokens + [-1] + wt, wrong=w))
    if not kept:
        raise ValueError(f"irrelevant_definition='distracted' left no example of {data_name!r}: every wrong "
                         f"answer tokenises to nothing")
    excluded["model_correct"] = winfo["model_correct"]
    excluded["wrong_answers"] = {"from_data": winfo["from_data"], "from_model": winfo["from_model"]}
    excluded["n"] = len(excluded["ids"])
    return kept


def pair_with_relevant(items: list[Any], relevant: list[Any], excluded: dict[str, Any]) -> list[Any]:
    """``contrast``: each noisy item with its question's relevant-only prompt (``gold_prompt``), and
    both token sequences in ``tokens`` (so the score fingerprint covers both); items whose question
    has no relevant-only item are dropped and counted in ``excluded`` (reason ``unpaired``)."""
    by_id = {it.id: it for it in relevant}
    out = []
    unpaired = [it.id for it in items if it.id not in by_id]
    for it in items:
        if it.id in by_id:
            r = by_id[it.id]
            out.append(dataclasses.replace(it, tokens=it.tokens + [-1] + r.tokens, gold_prompt=r.prompt))
    excluded["unpaired"] = len(unpaired)
    excluded["ids"] = list(excluded["ids"]) + unpaired
    excluded["n"] = len(excluded["ids"])
    return out


def load_answer_means(neurons_dir: str | os.PathLike) -> Float[torch.Tensor, "layer d_mlp"]:
    """``answer_means.safetensors`` of a mining folder (the constants of ``constant`` deactivation)."""
    path = Path(neurons_dir) / "answer_means.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: mine with --answer-means (`neurorit run`: "
                                "--mining.answer-means) to store the neurons' "
                                "mean activations at the answer-predicting positions of gold-only contexts")
    from neurorit_lens.neurons.score_files import read_tensor

    return read_tensor(path)[0]


def _score(attribute_items: Callable[..., torch.Tensor], model: Model, items: list[Any], cfg: Any) -> torch.Tensor:
    return attribute_items(model, items, cfg)


def _score_distracted(attribute_items: Callable[..., torch.Tensor], model: Model, items: list[Any],
                      cfg: Any) -> torch.Tensor:
    gold = attribute_items(model, items, cfg)
    return attribute_items(model, items, cfg, wrong=True) - gold


def _score_contrast(attribute_items: Callable[..., torch.Tensor], model: Model, items: list[Any],
                    cfg: Any) -> torch.Tensor:
    return attribute_items(model, items, cfg, contrast=True)


def _prepare_distracted(model: Model, items: list[Any], examples: Sequence[QAExample], template: str,
                        data_name: str, excluded: dict[str, Any], relevant: list[Any]) -> list[Any]:
    return attach_wrong_answers(model, items, examples, template, data_name, excluded)


def _prepare_contrast(model: Model, items: list[Any], examples: Sequence[QAExample], template: str,
                      data_name: str, excluded: dict[str, Any], relevant: list[Any]) -> list[Any]:
    return pair_with_relevant(items, relevant, excluded)


@dataclass(frozen=True)
class IDefinition:
    """How a definition of I builds, scores and orients the I condition of mining.

    ``setting_field``: the :class:`~neurorit_lens.config.MiningConfig` field naming the noise
    setting of the I prompts. ``score(attribute_items, model, items, cfg)``: raw scores of a
    batch, from mining's per-batch attribution ``attribute_items(model, items, cfg, wrong=False,
    contrast=False)``. ``orient(scores, ids, paired, scores_R, ids_R, excluded)``: larger = more
    irrelevant-context (:func:`orient_scores`). ``prepare(model, items, examples, template,
    data_name, excluded, relevant_items)``: what the items need before scoring (or ``None``).
    ``own_fields``: the definition's config fields (``I_FIELDS``) enter the score fingerprint.
    """

    setting_field: str
    score: Callable[..., torch.Tensor]
    orient: Callable[..., tuple[torch.Tensor, list[str]]]
    prepare: Callable[..., list[Any]] | None = None
    own_fields: bool = True


I_DEFINITIONS: Registry[IDefinition] = Registry("I definition")
"""What makes a neuron irrelevant-context (I): name -> :class:`IDefinition`."""
I_DEFINITIONS.register("gold", "positive attribution to log p(gold) under --irrelevant-setting",
                       IDefinition("irrelevant_setting", _score, _keep, own_fields=False))
I_DEFINITIONS.register("negative", "most negative attribution to log p(gold) under --noisy-setting (--paired: minus "
                       "the relevant-only score)", IDefinition("noisy_setting", _score, _orient_negative))
I_DEFINITIONS.register("distracted", "attribution to log p(wrong) - log p(gold) under --noisy-setting",
                       IDefinition("noisy_setting", _score_distracted, _keep, _prepare_distracted))
I_DEFINITIONS.register("contrast", "IG from the relevant-only to the noisy activations on their shared suffix, "
                       "negated (the noise-induced change lowers log p(gold))",
                       IDefinition("noisy_setting", _score_contrast, _negate, _prepare_contrast))
