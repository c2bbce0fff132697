"""EuroBERT and Universal Logit Distillation for the Hugging Face ecosystem.

`import eurobert_hf` registers the plugin's EuroBERT with the `transformers` Auto classes (see
`eurobert_hf.registration`). The trainers import TRL, which is slow to import, so they load on first access.
"""

import importlib
from typing import Any

from .modeling import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
    EuroBertPreTrainedModel,
)
from .registration import register_auto_classes, register_peft_defaults

__version__ = "0.1.0"

register_auto_classes()
register_peft_defaults()

_LAZY_ATTRIBUTES = {
    "uld_loss": "eurobert_hf.trainers.uld_losses",
    "SortedTeacherProbs": "eurobert_hf.trainers.uld_losses",
    "sort_teacher_probs": "eurobert_hf.trainers.uld_losses",
    "cache_teacher_probs": "eurobert_hf.trainers.teacher_cache",
    "build_teacher_cache": "eurobert_hf.trainers.cache_shards",
    "load_teacher_cache": "eurobert_hf.trainers.cache_shards",
    "ULDConfig": "eurobert_hf.trainers.uld_config",
    "ULDTrainer": "eurobert_hf.trainers.uld_trainer",
    "export_onnx": "eurobert_hf.export",
}

__all__ = [
    "EuroBertConfig",
    "EuroBertPreTrainedModel",
    "EuroBertModel",
    "EuroBertForMaskedLM",
    "EuroBertForSequenceClassification",
    "EuroBertForTokenClassification",
    "EuroBertForQuestionAnswering",
    "EuroBertForMultipleChoice",
    *_LAZY_ATTRIBUTES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'eurobert_hf' has no attribute {name!r}")
