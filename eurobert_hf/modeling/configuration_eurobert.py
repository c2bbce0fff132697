# Copyright 2026 The eurobert-hf contributors. Licensed under the Apache License, Version 2.0.
"""EuroBERT model configuration.

This file is self-contained (it imports only public `transformers` APIs) so that it can be uploaded to the Hub as
remote code next to `modeling_eurobert.py`. It reads every released EuroBERT config (Hub era: `rope_theta`,
`rope_scaling`, `clf_pooling`) and every config written by native `transformers` (5.3+: `rope_parameters`,
`classifier_pooling`), on transformers 4.56 through 5.x.
"""

import os
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

DEFAULT_ROPE_THETA = 250_000.0
CLASSIFIER_POOLINGS = ("bos", "mean", "late")
# The RoPE types transformers defines for encoders ("dynamic" and "longrope" rescale with the input length at run time).
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")

# The `auto_map` of a folder that holds this file and `modeling_eurobert.py`: every Auto class, pinned to those files.
EUROBERT_AUTO_MAP = {
    "AutoConfig": "configuration_eurobert.EuroBertConfig",
    "AutoModel": "modeling_eurobert.EuroBertModel",
    "AutoModelForMaskedLM": "modeling_eurobert.EuroBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_eurobert.EuroBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_eurobert.EuroBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_eurobert.EuroBertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_eurobert.EuroBertForMultipleChoice",
}

# On transformers 5, `rope_scaling` is a deprecated alias property of `rope_parameters`; on 4.x it is a plain field,
# and transformers' RoPE functions read it (with `rope_theta`) instead of `rope_parameters`.
ROPE_SCALING_IS_ALIAS = isinstance(getattr(PretrainedConfig, "rope_scaling", None), property)


def rope_type_of(settings: dict[str, Any] | None) -> str:
    """The RoPE type of a settings dict of any era (`rope_type`, or the legacy `type`); `"default"` when unset."""
    settings = settings or {}
    return settings.get("rope_type") or settings.get("type") or "default"


def _build_rope_parameters(
    rope_parameters: dict[str, Any] | None, rope_scaling: dict[str, Any] | None, rope_theta: float | None
) -> dict[str, Any]:
    """Merges the Hub-era (`rope_theta` + `rope_scaling`) and transformers-5 (`rope_parameters`) RoPE settings.

    When both are given (a config.json written by one version and edited for another), a scaling in either wins over
    plain RoPE in the other, so that a configured context extension is never dropped.
    """
    for source in (rope_parameters, rope_scaling):
        if source is not None and not isinstance(source, dict):
            raise ValueError(
                f"RoPE settings must be a dict such as {{'rope_type': 'yarn', 'factor': 2.0}}, got {source!r}."
            )
    parameters, scaling = dict(rope_parameters or {}), dict(rope_scaling or {})
    if rope_type_of(parameters) == "default" and rope_type_of(scaling) != "default":
        merged = {**parameters, **scaling}
    else:
        merged = {**scaling, **parameters}
    merged["rope_type"] = rope_type_of(merged)
    merged.pop("type", None)
    if merged.get("rope_theta") is None:
        merged["rope_theta"] = DEFAULT_ROPE_THETA if rope_theta is None else rope_theta
    merged["rope_theta"] = float(merged["rope_theta"])
    return merged


class EuroBertConfig(PretrainedConfig):
    r"""
    Configuration of a EuroBERT model ([EuroBERT: Scaling Multilingual Encoders for European
    Languages](https://huggingface.co/papers/2503.05500)). The defaults give the EuroBERT-210m architecture.

    Args:
        vocab_size (`int`, *optional*, defaults to 128256):
            Vocabulary size (the Llama-3 tokenizer).
        hidden_size (`int`, *optional*, defaults to 768):
            Dimension of the hidden representations.
        intermediate_size (`int`, *optional*, defaults to 3072):
            Dimension of the SwiGLU MLP.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of encoder layers.
        num_attention_heads (`int`, *optional*, defaults to 12):
            Number of query heads.
        num_key_value_heads (`int`, *optional*):
            Number of key/value heads (grouped-query attention). Defaults to `num_attention_heads`.
        head_dim (`int`, *optional*):
            Dimension of each attention head. Defaults to `hidden_size // num_attention_heads`; EuroBERT-2.1B uses 128.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the gated MLP.
        max_position_embeddings (`int`, *optional*, defaults to 8192):
            Number of positions the model was trained on. Longer sequences still run, as in native transformers;
            configure RoPE scaling to extend the context. Packed rows may be longer: positions restart per sequence.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal weight initialisation.
        rms_norm_eps (`float`, *optional*, defaults to 1e-05):
            Epsilon of the RMS normalisations.
        bos_token_id (`int`, *optional*, defaults to 128000):
            `<|begin_of_text|>`.
        eos_token_id (`int`, *optional*, defaults to 128001):
            `<|end_of_text|>`.
        pad_token_id (`int`, *optional*, defaults to 128001):
            Padding token; the same id as EOS, so build attention masks from the tokenizer, never from `input_ids`.
        mask_token_id (`int`, *optional*, defaults to 128002):
            `<|mask|>`.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            EuroBERT's masked-LM head is not tied to the input embeddings.
        attention_bias (`bool`, *optional*, defaults to `False`):
            Whether the attention projections have biases.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities (training only).
        mlp_bias (`bool`, *optional*, defaults to `False`):
            Whether the MLP projections have biases.
        rope_parameters (`dict`, *optional*):
            RoPE settings in the transformers-5 format, e.g. `{"rope_type": "default", "rope_theta": 250000.0}` or
            `{"rope_type": "yarn", "factor": 2.0, "rope_theta": 250000.0}` for contexts beyond 8192 tokens.
            Supported types: `"default"`, `"linear"`, `"dynamic"`, `"yarn"`, `"llama3"`, `"longrope"`.
        rope_theta (`float`, *optional*):
            Hub-era RoPE base. Defaults to 250000, the value of every released checkpoint.
        rope_scaling (`dict`, *optional*):
            Hub-era RoPE scaling settings (`{"type": ...}` or `{"rope_type": ...}`); merged into `rope_parameters`,
            and kept when `rope_parameters` holds plain RoPE.
        classifier_pooling (`str`, *optional*, defaults to `"late"`):
            Sequence-classification pooling: `"bos"` (first token), `"mean"` (masked mean of the hidden states) or
            `"late"` (classify every token, then take the masked mean of the logits).
        clf_pooling (`str`, *optional*):
            Hub-era name of `classifier_pooling`; when present it wins, so Hub-era fine-tunes keep their pooling.

    Example:

    ```python
    >>> from eurobert_hf import EuroBertConfig, EuroBertModel

    >>> config = EuroBertConfig(num_hidden_layers=2)
    >>> model = EuroBertModel(config)
    ```
    """

    model_type = "eurobert"
    keys_to_ignore_at_inference = ["past_key_values"]
    # Tensor- and pipeline-parallel plans of the encoder (`from_pretrained(..., tp_plan="auto")`), as native EuroBERT.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    def __init__(
        self,
        vocab_size: int = 128256,
        hidden_size: int = 768,
        intermediate_size: int = 3072,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        bos_token_id: int | None = 128000,
        eos_token_id: int | None = 128001,
        pad_token_id: int | None = 128001,
        mask_token_id: int | None = 128002,
        tie_word_embeddings: bool = False,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        rope_parameters: dict[str, Any] | None = None,
        rope_theta: float | None = None,
        rope_scaling: dict[str, Any] | None = None,
        classifier_pooling: str = "late",
        clf_pooling: str | None = None,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else self._default_head_dim()
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.classifier_pooling = clf_pooling if clf_pooling is not None else classifier_pooling

        self.rope_parameters = _build_rope_parameters(rope_parameters, rope_scaling, rope_theta)
        self.rope_theta = self.rope_parameters["rope_theta"]
        if not ROPE_SCALING_IS_ALIAS:
            # transformers 4.x RoPE helpers read `rope_scaling`; it stays None for plain RoPE, as in the Hub configs.
            self.rope_scaling = None if self.rope_parameters["rope_type"] == "default" else dict(self.rope_parameters)
            if (
                self.rope_parameters["rope_type"] == "longrope"
                and "original_max_position_embeddings" in self.rope_parameters
            ):
                # transformers 4.x's longrope reads the pretraining length from the config itself (Phi-3 style).
                self.original_max_position_embeddings = self.rope_parameters["original_max_position_embeddings"]

        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.validate_eurobert()

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Saves the configuration, with an `auto_map` that names only code saved in the same folder.

        transformers copies the code files of a class registered with `register_for_auto_class` (`import eurobert_hf`
        registers EuroBERT's; loading with `trust_remote_code=True` registers the loaded class) into the folder before
        it saves the model's config. The `auto_map` then lists every class of the copied files, and nothing else: no
        entry into another repository (Hub-era checkpoints carry `"EuroBERT/EuroBERT-210m--modeling_eurobert..."`,
        which would run that repository's current, unpinned code) and no entry for a file the folder lacks.
        """
        folder = Path(save_directory)
        held = {reference.split(".")[0] for reference in EUROBERT_AUTO_MAP.values()}
        held = {module for module in held if (folder / f"{module}.py").is_file()}
        if self._auto_class is not None:
            held.add("configuration_eurobert")
        if "configuration_eurobert" not in held:
            held.discard("modeling_eurobert")  # which imports it
        auto_map = {
            auto: reference for auto, reference in EUROBERT_AUTO_MAP.items() if reference.split(".")[0] in held
        }
        # As transformers does for classes registered for auto classes, the config keeps the `auto_map` it saved, so
        # that it equals the config loaded back from the folder.
        self.__dict__.pop("auto_map", None)
        if auto_map:
            self.auto_map = auto_map
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def _default_head_dim(self) -> int:
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads}) unless head_dim is given explicitly (EuroBERT-2.1B sets head_dim=128)."
            )
        return self.hidden_size // self.num_attention_heads

    def validate_eurobert(self) -> None:
        """Checks every EuroBERT-specific value and raises a `ValueError` naming the field and the allowed values."""
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"EuroBertConfig.{name} must be a positive integer, got {value!r}.")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads}) for grouped-query attention."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"EuroBertConfig.head_dim must be even for rotary embeddings, got {self.head_dim}.")
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"EuroBertConfig.classifier_pooling must be one of {CLASSIFIER_POOLINGS}, "
                f"got {self.classifier_pooling!r}."
            )
        rope_type = self.rope_parameters["rope_type"]
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"EuroBertConfig.rope_parameters['rope_type'] must be one of {SUPPORTED_ROPE_TYPES}, got "
                f"{rope_type!r}."
            )
        if self.rope_parameters["rope_theta"] <= 0:
            raise ValueError(f"RoPE theta must be positive, got {self.rope_parameters['rope_theta']}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"EuroBertConfig.attention_dropout must be in [0, 1), got {self.attention_dropout}.")


__all__ = ["EUROBERT_AUTO_MAP", "EuroBertConfig"]
