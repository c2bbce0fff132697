"""Evaluation metrics as `evaluate.Metric` subclasses that ship with the package, so they work offline.

Instantiate them directly (never through `evaluate.load`); they then behave like any other `evaluate` metric:

```py
>>> from eurobert_hf.metrics import RougeL
>>> RougeL().compute(predictions=["the cat sat"], references=["the cat sat down"])["rougeL"]
0.857...
```
"""

from .classification import Accuracy, MacroF1
from .generation import RougeL, TokenF1
from .squad import SquadMetric
from .text import normalize_answer, word_tokens
from .token_classification import SeqEvalF1, extract_entities

__all__ = [
    "Accuracy",
    "MacroF1",
    "RougeL",
    "SeqEvalF1",
    "SquadMetric",
    "TokenF1",
    "extract_entities",
    "normalize_answer",
    "word_tokens",
]
