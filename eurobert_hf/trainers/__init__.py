"""ULD (Universal Logit Distillation) for TRL: the loss, its configuration and its trainer.

The trainer imports TRL, which is slow to import, so the names load on first access.
"""

import importlib
from typing import Any

_LAZY_ATTRIBUTES = {
    "uld_loss": "eurobert_hf.trainers.uld_losses",
    "ULDConfig": "eurobert_hf.trainers.uld_config",
    "ULDTrainer": "eurobert_hf.trainers.uld_trainer",
}

__all__ = list(_LAZY_ATTRIBUTES)


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'eurobert_hf.trainers' has no attribute {name!r}")
