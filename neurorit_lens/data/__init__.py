"""RAG QA data: schema, loaders, context builder, prompt templates, the embedded default set.

Pipeline: ``load_examples`` (or ``embedded_examples``) -> ``split_examples`` ->
``build_instances(examples, "noise=0.4")`` -> ``render_prompts(instances, tokenizer)``.
"""

from neurorit_lens.data.distractors import BM25, add_distractors
from neurorit_lens.data.embedded import embedded_examples
from neurorit_lens.data.loaders import FORMATS, LoadResult, detect_format, load_examples
from neurorit_lens.data.prompts import (
    RenderedPrompts,
    answer_continuation,
    render_prompt,
    render_prompts,
    resolve_template,
)
from neurorit_lens.data.records import DataError
from neurorit_lens.data.schema import Label, Passage, QAExample, RAGInstance
from neurorit_lens.data.settings import (
    VALID_SETTINGS,
    BuiltInstances,
    Setting,
    build_instances,
    parse_setting,
)
from neurorit_lens.data.splits import load_split, split_examples
from neurorit_lens.data.text import contains_answer, normalize_answer, normalize_question

__all__ = [
    "BM25",
    "FORMATS",
    "VALID_SETTINGS",
    "BuiltInstances",
    "DataError",
    "Label",
    "LoadResult",
    "Passage",
    "QAExample",
    "RAGInstance",
    "RenderedPrompts",
    "Setting",
    "add_distractors",
    "answer_continuation",
    "build_instances",
    "contains_answer",
    "detect_format",
    "embedded_examples",
    "load_examples",
    "load_split",
    "normalize_answer",
    "normalize_question",
    "parse_setting",
    "render_prompt",
    "render_prompts",
    "resolve_template",
    "split_examples",
]
