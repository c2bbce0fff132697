"""EuroBERT and Universal Logit Distillation for the Hugging Face ecosystem.

`import eurobert_hf` registers the plugin's EuroBERT with the `transformers` Auto classes (see `registration`).
The trainers import TRL, which is slow to import, so they load on first access.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "uld_loss": "eurobert_hf.trainers.uld_loss",
    "ULDConfig": "eurobert_hf.trainers.uld_config",
    "ULDTrainer": "eurobert_hf.trainers.uld_trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'eurobert_hf' has no attribute {name!r}")
