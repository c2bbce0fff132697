"""The `eurobert-hf demo`: cross-tokenizer ULD distillation of Gemma-3-270M into SmolLM2-135M-Instruct, offline.

`run_demo(output_dir, quick=False, seed=0)` runs the whole pipeline (see `pipeline`); `prepare_demo_models()` only
converts and caches the two real models (see `assets`).
"""

from .assets import DemoModels, check_demo_requirements, default_cache_dir, prepare_demo_models
from .pipeline import DemoResult, DemoSettings, run_demo

__all__ = [
    "DemoModels",
    "DemoResult",
    "DemoSettings",
    "check_demo_requirements",
    "default_cache_dir",
    "prepare_demo_models",
    "run_demo",
]
