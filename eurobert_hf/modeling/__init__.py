"""EuroBERT configuration and models (self-contained files, uploadable to the Hub as remote code)."""

from .configuration_eurobert import EuroBertConfig
from .modeling_eurobert import (
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
    EuroBertPreTrainedModel,
)

__all__ = [
    "EuroBertConfig",
    "EuroBertPreTrainedModel",
    "EuroBertModel",
    "EuroBertForMaskedLM",
    "EuroBertForSequenceClassification",
    "EuroBertForTokenClassification",
    "EuroBertForQuestionAnswering",
    "EuroBertForMultipleChoice",
]
