"""RAG QA data: schema, loaders, context builder, prompt templates, the embedded default set."""

from .schema import Label, Passage, QAExample, RAGInstance

__all__ = ["Label", "Passage", "QAExample", "RAGInstance"]
