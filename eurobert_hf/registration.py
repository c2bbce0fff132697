"""Registers the plugin's EuroBERT with the `transformers` Auto classes and PEFT's LoRA defaults.

Runs once when `eurobert_hf` is imported. Where the installed transformers ships its own EuroBERT (5.3+), the
plugin's classes take precedence for `"eurobert"` configs: they load the same checkpoints into identical weights and
outputs, and add padding-free execution, question-answering and multiple-choice heads, and Hub-era `clf_pooling`.
Set the environment variable `EUROBERT_HF_PREFER_NATIVE=1` before importing to keep the native classes instead.
"""

import logging
import os

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .modeling import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
)

logger = logging.getLogger(__name__)

PREFER_NATIVE_ENV = "EUROBERT_HF_PREFER_NATIVE"

AUTO_CLASS_TO_MODEL = {
    AutoModel: EuroBertModel,
    AutoModelForMaskedLM: EuroBertForMaskedLM,
    AutoModelForSequenceClassification: EuroBertForSequenceClassification,
    AutoModelForTokenClassification: EuroBertForTokenClassification,
    AutoModelForQuestionAnswering: EuroBertForQuestionAnswering,
    AutoModelForMultipleChoice: EuroBertForMultipleChoice,
}

# All projections of every block: the usual choice for encoder fine-tuning with LoRA.
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def native_eurobert_available() -> bool:
    """Whether the installed transformers ships its own EuroBERT (5.3+)."""
    return "eurobert" in CONFIG_MAPPING and CONFIG_MAPPING["eurobert"] is not EuroBertConfig


def prefer_native() -> bool:
    """Whether the user asked to keep transformers' native EuroBERT classes (`EUROBERT_HF_PREFER_NATIVE=1`)."""
    return os.environ.get(PREFER_NATIVE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def register_auto_classes() -> bool:
    """Maps `"eurobert"` configs to the plugin's classes in every Auto class. Idempotent.

    Returns whether the plugin's classes are registered (False when the native classes are kept on request).
    """
    native = native_eurobert_available()
    if native and prefer_native():
        logger.info("eurobert_hf: %s=1, keeping transformers' native EuroBERT classes.", PREFER_NATIVE_ENV)
        return False
    AutoConfig.register("eurobert", EuroBertConfig, exist_ok=True)
    # Every `save_pretrained` (the Trainer's, sentence-transformers', the user's) then copies the self-contained code
    # files next to the weights and `EuroBertConfig.save_pretrained` writes the `auto_map` that loads them, so a saved
    # folder that names EuroBERT's code always holds it.
    EuroBertConfig.register_for_auto_class("AutoConfig")
    for auto_class, model_class in AUTO_CLASS_TO_MODEL.items():
        auto_class.register(EuroBertConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)
    if native:
        logger.info(
            "eurobert_hf: the plugin's EuroBERT replaces transformers' native one for 'eurobert' models (same "
            "weights and outputs, padding-free, more heads). Set %s=1 before importing eurobert_hf to keep the "
            "native classes.",
            PREFER_NATIVE_ENV,
        )
    return True


def register_peft_defaults() -> None:
    """Gives `LoraConfig()` without `target_modules` sensible EuroBERT targets, and makes PEFT train the whole
    sequence-classification head (`dense` as well as `classifier`) for EuroBERT models."""
    try:
        from peft import PeftModelForSequenceClassification
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    except ImportError:
        return
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault("eurobert", list(LORA_TARGET_MODULES))
    original_init = PeftModelForSequenceClassification.__init__
    if getattr(original_init, "_eurobert_hf_wrapped", False):
        return

    def __init__(self, model, peft_config, *args, **kwargs):
        # PEFT saves only `classifier`/`score` by default; EuroBERT's randomly initialised `dense` head layer must be
        # trained too, or the fine-tune silently keeps a random projection.
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) == "eurobert" and hasattr(peft_config, "modules_to_save"):
            modules = list(peft_config.modules_to_save or [])
            if "dense" not in modules:
                peft_config.modules_to_save = [*modules, "dense"]
        original_init(self, model, peft_config, *args, **kwargs)

    __init__._eurobert_hf_wrapped = True
    PeftModelForSequenceClassification.__init__ = __init__
