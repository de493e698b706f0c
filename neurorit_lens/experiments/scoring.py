"""Per-question scores of one model on one setting: the unit both the comparison and the study store.

:func:`score_questions` answers every question greedily (accuracy, EM, F1 of the extracted
answer; :func:`neurorit_lens.evaluation.evaluate.evaluate_setting`) and, with ``logprob``,
scores the teacher-forced log p(gold answer | prompt) summed over the answer tokens
(:func:`neurorit_lens.objective.answer_logprobs`) on the same prompts. One record per
question, keyed by its id, so that two methods pair on the questions both answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from neurorit_lens.config import DataConfig, EvalConfig
from neurorit_lens.data.schema import QAExample
from neurorit_lens.evaluation.evaluate import SettingResult
from neurorit_lens.tl_backend import Model

__all__ = ["RECORD_KEYS", "score_questions"]

#: What a stored record keeps of an :class:`~neurorit_lens.evaluation.evaluate.EvalRecord` (plus ``logprob``).
RECORD_KEYS = ("id", "accuracy", "em", "f1", "accuracy_raw", "copied", "prediction", "extracted", "n_passages",
               "gold_positions", "prompt_tokens")


def score_questions(model: Model, examples: Sequence[QAExample], setting: str, ecfg: EvalConfig, dcfg: DataConfig,
                    data_name: str = "", logprob: bool = True) -> tuple[list[dict[str, Any]], SettingResult]:
    """Per-question records (``RECORD_KEYS`` and ``logprob``, ``None`` without ``logprob``) and the
    setting's summary.

    Raises:
        ValueError: the setting fits no example (the message names ``data_name`` and why).
    """
    from neurorit_lens.data.build import build_prompts
    from neurorit_lens.evaluation.evaluate import evaluate_setting
    from neurorit_lens.objective import answer_logprobs

    recs, summary = evaluate_setting(model, examples, setting, ecfg, dcfg, show_progress=False, data_name=data_name)
    lp: dict[str, float] = {}
    if logprob:
        ps = build_prompts(examples, setting, model.tokenizer, dcfg, n_ctx=model.cfg.n_ctx,
                           reserve_tokens=ecfg.max_new_tokens)
        lp = dict(zip(ps.ids, answer_logprobs(model, ps.prompts, ps.continuations, ecfg.batch_size).tolist(),
                      strict=True))
    return [{**{k: getattr(r, k) for k in RECORD_KEYS}, "logprob": lp.get(r.id)} for r in recs], summary
