# Copyright 2026 The eurobert-hf contributors. Licensed under the Apache License, Version 2.0.
"""PyTorch EuroBERT, a padding-free implementation.

EuroBERT (arXiv 2503.05500) is a Llama-style pre-norm encoder with bidirectional attention. This implementation loads
the official checkpoints and those saved by native `transformers` unchanged (same state-dict names), and skips all
work on padding: when a batch is padded, the real tokens are packed into one row before the first layer, every layer
runs on real tokens only, attention is restricted to each sequence, and the padded layout is restored at the end.
Already-packed rows (`position_ids` restarting at 0, as produced by `DataCollatorWithFlattening`) take the same path.

This file is self-contained (torch + public `transformers` APIs + `configuration_eurobert.py`) so that it can be
uploaded to the Hub as remote code.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils.generic import TransformersKwargs, can_return_tuple

from .configuration_eurobert import ROPE_SCALING_IS_ALIAS, EuroBertConfig, rope_type_of

try:  # transformers >= 5
    from transformers.utils.output_capturing import capture_outputs
except ImportError:  # transformers 4.56-4.57: the same output recording lives in `check_model_inputs`
    from transformers.utils.generic import check_model_inputs as capture_outputs

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.10
    varlen_attn = None
# torch 2.10/2.11's varlen_attn has no grouped-query support; key/value heads are repeated for it instead.
_VARLEN_HAS_GQA = varlen_attn is not None and "enable_gqa" in inspect.signature(varlen_attn).parameters

try:
    from torch.nn.attention.flex_attention import create_block_mask
except ImportError:  # torch without flex attention
    create_block_mask = None

_TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
# Flash-attention's description of packed sequences; the model passes it to every attention call on a packed row.
PACKED_SEQUENCE_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


@dataclass
class PackedSequences:
    """Where the real tokens of a batch sit once packed into one row.

    Attributes:
        cu_seqlens (`torch.IntTensor` of shape `(num_sequences + 1,)`):
            Cumulative sequence lengths in the packed row (the flash-attention convention).
        lengths (`list[int]`):
            Length of each sequence, on the host.
        max_seqlen (`int`):
            Longest sequence.
        indices (`torch.LongTensor` of shape `(num_tokens,)`, *optional*):
            Flat positions of the real tokens in the `(batch_size * seq_len)` padded layout; `None` when the input was
            already packed.
        padded_shape (`tuple[int, int]`, *optional*):
            `(batch_size, seq_len)` of the padded input, to restore its layout.
    """

    cu_seqlens: torch.Tensor
    lengths: list[int]
    max_seqlen: int
    indices: torch.Tensor | None = None
    padded_shape: tuple[int, int] | None = None

    @classmethod
    def from_attention_mask(cls, attention_mask: torch.Tensor) -> "PackedSequences":
        mask = attention_mask.bool()
        lengths_tensor = mask.sum(dim=-1, dtype=torch.int32)
        indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
        lengths = lengths_tensor.tolist()
        if min(lengths) == 0:
            raise ValueError("attention_mask has a row with no token to attend to; every sequence needs one token.")
        return cls(
            cu_seqlens=F.pad(torch.cumsum(lengths_tensor, dim=0, dtype=torch.int32), (1, 0)),
            lengths=lengths,
            max_seqlen=max(lengths),
            indices=indices,
            padded_shape=tuple(mask.shape),
        )

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor) -> "PackedSequences":
        cu_seqlens = cu_seqlens.to(torch.int32)
        lengths = cu_seqlens.diff().tolist()
        return cls(cu_seqlens=cu_seqlens, lengths=lengths, max_seqlen=max(lengths))

    @classmethod
    def from_position_ids(cls, position_ids: torch.Tensor) -> "PackedSequences":
        flat = position_ids.flatten()
        starts = torch.nonzero(flat == 0, as_tuple=False).flatten()
        total = torch.tensor([flat.numel()], device=flat.device)
        return cls.from_cu_seqlens(torch.cat([starts, total]))

    def attention_kwargs(self) -> dict:
        """The packed row in flash-attention's varlen kwargs, which every attention call on it receives."""
        return {
            "cu_seq_lens_q": self.cu_seqlens,
            "cu_seq_lens_k": self.cu_seqlens,
            "max_length_q": self.max_seqlen,
            "max_length_k": self.max_seqlen,
        }

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """`(batch, seq_len, ...)` → `(1, num_tokens, ...)` holding the real tokens only."""
        return padded.flatten(0, 1).index_select(0, self.indices).unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """`(1, num_tokens, ...)` → `(batch, seq_len, ...)`, zeros at padding positions."""
        packed = packed.squeeze(0)
        padded = packed.new_zeros((self.padded_shape[0] * self.padded_shape[1], *packed.shape[1:]))
        padded = padded.index_copy(0, self.indices, packed)
        return padded.view(*self.padded_shape, *packed.shape[1:])


# torch < 2.5 has no is_exporting; its torch.export always ran under is_compiling.
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def is_capturing_graph() -> bool:
    """Whether `torch.compile`, `torch.export` (and so the ONNX exporter) or the TorchScript tracer is recording the
    model. A recorded graph cannot branch on the contents of a tensor, so the model then takes its mask-based padded
    path, whose computation depends on shapes only, instead of packing the real tokens."""
    return torch.compiler.is_compiling() or _is_exporting() or torch.jit.is_tracing()


def _has_restarting_positions(position_ids: torch.Tensor) -> bool:
    return position_ids.shape[0] == 1 and bool((position_ids[0, 1:] == 0).any())


class EuroBertRMSNorm(nn.Module):
    """Root-mean-square normalisation, computed in float32 and scaled by a learned weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normalized = F.rms_norm(hidden_states.float(), (hidden_states.shape[-1],), eps=self.variance_epsilon)
        return self.weight * normalized.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def _rope_settings(config: EuroBertConfig) -> dict:
    """The RoPE settings as the installed transformers' RoPE functions read them: `rope_parameters` on 5.x,
    `rope_scaling` and `rope_theta` on 4.x (read at model construction, so that later config edits apply)."""
    if ROPE_SCALING_IS_ALIAS:
        return dict(config.rope_parameters or {})
    return {**(config.rope_scaling or {}), "rope_theta": config.rope_theta}


class EuroBertRotaryEmbedding(nn.Module):
    """Rotary position embeddings ("rotate half" convention), with every RoPE type transformers defines; `dynamic`
    and `longrope` update their frequencies with the input length through transformers' `dynamic_rope_update`."""

    def __init__(self, config: EuroBertConfig, device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.rope_type = rope_type_of(_rope_settings(config))
        self.rope_init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            self.rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = self.rope_init_fn(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(
        config: EuroBertConfig, device: torch.device | None = None, seq_len: int | None = None
    ) -> tuple[torch.Tensor, float]:
        """Plain RoPE frequencies; computed here because transformers' "default" entry moved between releases."""
        base = _rope_settings(config).get("rope_theta", config.rope_theta)
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
        return 1.0 / (base ** (exponents / config.head_dim)), 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float)
        with torch.autocast(device_type=x.device.type, enabled=False):
            freqs = position_ids[..., None].float() * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotates half the hidden dims of the input."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Applies rotary embeddings to queries and keys of shape `(batch, heads, seq_len, head_dim)`."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """`(batch, kv_heads, seq_len, head_dim)` → `(batch, kv_heads * n_rep, seq_len, head_dim)`."""
    if n_rep == 1:
        return hidden_states
    batch, num_key_value_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, num_key_value_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention: explicit scores, additive mask, float32 softmax. Returns `(batch, seq, heads, dim)`."""
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


# Attention over one packed row `(1, heads, num_tokens, head_dim)` whose sequences are given by flash-attention's
# `cu_seq_lens_*` kwargs: each function attends within sequences only. Flash-attention kernels take those kwargs
# themselves and need no variant.


def _per_sequence_attention(attention: Callable) -> Callable:
    """One call of `attention` per packed sequence: exact, and no FLOP spent across sequences (cheap on CPU)."""

    def attention_per_sequence(module, query, key, value, attention_mask, cu_seq_lens_q, **kwargs):
        for name in PACKED_SEQUENCE_KWARGS:
            kwargs.pop(name, None)
        lengths = cu_seq_lens_q.diff().tolist()
        outputs = [
            attention(module, q, k, v, None, **kwargs)[0]
            for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
        ]
        return torch.cat(outputs, dim=1), None

    return attention_per_sequence


def _can_use_torch_varlen(query: torch.Tensor, dropout: float) -> bool:
    return (
        varlen_attn is not None
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and dropout == 0.0
        and not torch.compiler.is_compiling()
    )


def packed_sdpa_attention(module, query, key, value, attention_mask, cu_seq_lens_q, max_length_q, **kwargs):
    """torch's varlen kernel on CUDA in half precision, else `sdpa` once per sequence."""
    if not _can_use_torch_varlen(query, kwargs.get("dropout", 0.0)):
        return _per_sequence_attention(ALL_ATTENTION_FUNCTIONS["sdpa"])(
            module, query, key, value, attention_mask, cu_seq_lens_q, **kwargs
        )
    groups = module.num_key_value_groups
    gqa_kwargs = {"enable_gqa": True} if _VARLEN_HAS_GQA and groups > 1 else {}
    if groups > 1 and not _VARLEN_HAS_GQA:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    output = varlen_attn(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seq_lens_q,
        cu_seq_lens_q,
        max_length_q,
        max_length_q,
        scale=kwargs["scaling"],
        **gqa_kwargs,
    )
    return output.unsqueeze(0), None


def packed_flex_attention(module, query, key, value, attention_mask, cu_seq_lens_q, **kwargs):
    """`flex_attention` with a block mask that keeps each token within its own sequence."""
    if create_block_mask is None:
        raise ValueError("flex_attention needs torch.nn.attention.flex_attention; upgrade torch or use sdpa.")
    num_tokens = query.shape[2]
    document_ids = torch.repeat_interleave(
        torch.arange(len(cu_seq_lens_q) - 1, device=query.device), cu_seq_lens_q.diff()
    )

    def same_document(batch_idx, head_idx, q_idx, kv_idx):
        return document_ids[q_idx] == document_ids[kv_idx]

    block_mask = create_block_mask(
        same_document, B=None, H=None, Q_LEN=num_tokens, KV_LEN=num_tokens, device=query.device
    )
    return ALL_ATTENTION_FUNCTIONS["flex_attention"](module, query, key, value, block_mask, scaling=kwargs["scaling"])


# The packed variant of each `config._attn_implementation` that needs one.
PACKED_ATTENTION_FUNCTIONS = {
    "eager": _per_sequence_attention(eager_attention_forward),
    "sdpa": packed_sdpa_attention,
    "flex_attention": packed_flex_attention,
}


class EuroBertAttention(nn.Module):
    """Bidirectional multi-head attention with grouped-query heads and rotary embeddings."""

    def __init__(self, config: EuroBertConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False

        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_bias
        )

    def attention_function(self, packed: bool) -> Callable:
        """The attention function of `config._attn_implementation` (read at every call, so that
        `set_attn_implementation` applies at once); on a packed row, its packed variant."""
        implementation = self.config._attn_implementation
        if packed and implementation in PACKED_ATTENTION_FUNCTIONS:
            return PACKED_ATTENTION_FUNCTIONS[implementation]
        if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers >= 5
            return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        if implementation == "eager":
            return eager_attention_forward
        return ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)

        attention_interface = self.attention_function(packed="cu_seq_lens_q" in kwargs)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class EuroBertMLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, config: EuroBertConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class EuroBertDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: attention then MLP, each with a residual connection. ("Decoder" only by its Llama lineage.)"""

    def __init__(self, config: EuroBertConfig, layer_idx: int):
        super().__init__()
        self.self_attn = EuroBertAttention(config, layer_idx)
        self.mlp = EuroBertMLP(config)
        self.input_layernorm = EuroBertRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = EuroBertRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class EuroBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation, attention-backend flags and the config binding shared by every EuroBERT model."""

    config_class = EuroBertConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EuroBertDecoderLayer"]
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": EuroBertDecoderLayer, "attentions": EuroBertAttention}

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, EuroBertRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, EuroBertRotaryEmbedding):
            inv_freq, _ = module.rope_init_fn(module.config, module.inv_freq.device)
            with torch.no_grad():
                module.inv_freq.copy_(inv_freq)
                module.original_inv_freq.copy_(inv_freq)


class EuroBertModel(EuroBertPreTrainedModel):
    """The bare EuroBERT encoder, returning the final-normed hidden states."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [EuroBertDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = EuroBertRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = EuroBertRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Token ids. Exactly one of `input_ids` and `inputs_embeds` is required.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 for real tokens, 0 for padding. Padding positions are skipped entirely; their outputs are zeros.
            position_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Positions; positions restarting at 0 inside a single row mark packed sequences (as produced by
                `DataCollatorWithFlattening`), which then never attend to each other. Defaults to counting the real
                tokens of each row from 0, so that left and right padding give the same outputs.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*):
                Embeddings to use instead of `input_ids`.
            kwargs:
                `output_attentions`, `output_hidden_states` and `return_dict` as in every transformers model
                (attention maps need `attn_implementation="eager"`; with `sdpa` they are skipped with a warning).
                `cu_seq_lens_q` (with `max_length_q`) describes packed sequences directly, as flash-attention
                collators provide them.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("EuroBertModel needs exactly one of `input_ids` and `inputs_embeds`.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        if attention_mask is not None and tuple(attention_mask.shape) != (batch_size, seq_len):
            raise ValueError(
                f"attention_mask must have shape (batch_size, seq_len) = {(batch_size, seq_len)}, got "
                f"{tuple(attention_mask.shape)}. Pass the tokenizer's 2D attention_mask (1 = token, 0 = padding)."
            )
        cu_seq_lens = kwargs.pop("cu_seq_lens_q", None)
        for key in PACKED_SEQUENCE_KWARGS:
            kwargs.pop(key, None)

        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(seq_len, device=inputs_embeds.device).unsqueeze(0).expand(batch_size, -1)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        elif tuple(position_ids.shape) != (batch_size, seq_len) and tuple(position_ids.shape) != (1, seq_len):
            raise ValueError(
                f"position_ids must have shape (batch_size, seq_len) = {(batch_size, seq_len)}, got "
                f"{tuple(position_ids.shape)}."
            )
        # Recorded hidden states and attention maps keep the input's layout, so padding is not removed for them.
        keep_padded_layout = bool(
            kwargs.get("output_hidden_states", self.config.output_hidden_states)
            or kwargs.get("output_attentions", self.config.output_attentions)
        )
        packed, attention_mask = self._plan_packing(attention_mask, position_ids, cu_seq_lens, keep_padded_layout)
        padding = ~attention_mask.bool()[..., None] if attention_mask is not None else None
        hidden_states = inputs_embeds
        if packed is not None:
            if packed.indices is not None:
                hidden_states = packed.pack(hidden_states)
                position_ids = packed.pack(position_ids.expand(batch_size, -1))
            kwargs.update(packed.attention_kwargs())
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        if attention_mask is not None:
            attention_mask = self._expand_padding_mask(attention_mask, hidden_states.dtype)

        for layer in self.layers:
            hidden_states = layer(
                hidden_states, position_embeddings=position_embeddings, attention_mask=attention_mask, **kwargs
            )
        hidden_states = self.norm(hidden_states)
        if packed is not None and packed.indices is not None:
            hidden_states = packed.unpack(hidden_states)
        elif padding is not None:
            # The padded path computes outputs at padding positions too; zero them as the packed path does.
            hidden_states = hidden_states.masked_fill(padding, 0.0)
        return BaseModelOutput(last_hidden_state=hidden_states)

    def _plan_packing(
        self,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cu_seq_lens: torch.Tensor | None,
        keep_padded_layout: bool,
    ) -> tuple[PackedSequences | None, torch.Tensor | None]:
        """Decides between the padded path (returns a mask) and the packed path (returns `PackedSequences`)."""
        if is_capturing_graph():
            if cu_seq_lens is not None:
                raise ValueError(
                    "cu_seq_lens_q (packed sequences) cannot be used while compiling or exporting the model: pass "
                    "padded input_ids with their attention_mask instead."
                )
            return None, attention_mask
        if cu_seq_lens is not None:
            if attention_mask is not None and not bool(attention_mask.all()):
                raise ValueError("Pass either cu_seq_lens_q (packed sequences) or a padding attention_mask, not both.")
            return PackedSequences.from_cu_seqlens(cu_seq_lens), None
        if attention_mask is None or bool(attention_mask.all()):
            if _has_restarting_positions(position_ids):
                return PackedSequences.from_position_ids(position_ids), None
            return None, None
        if keep_padded_layout:
            return None, attention_mask
        return PackedSequences.from_attention_mask(attention_mask), None

    def _expand_padding_mask(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`(batch, seq_len)` 0/1 → additive `(batch, 1, 1, seq_len)` key mask (boolean for sdpa)."""
        keep = attention_mask.bool()[:, None, None, :]
        if self.config._attn_implementation == "sdpa":
            return keep
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def _masked_mean(values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence dimension of `(batch, seq_len, dim)`, counting only unmasked positions."""
    if attention_mask is None:
        return values.mean(dim=1)
    mask = attention_mask.to(device=values.device, dtype=values.dtype).unsqueeze(-1)
    return (values * mask).sum(dim=1) / mask.sum(dim=1)


def _first_token(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state of each row's first real token (`<|begin_of_text|>`), wherever padding puts it."""
    if attention_mask is None:
        return hidden_states[:, 0]
    first = attention_mask.to(hidden_states.device).int().argmax(dim=-1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), first]


class EuroBertPooledClassifier(EuroBertPreTrainedModel):
    """Backbone plus EuroBERT's `dense → GELU → classifier` head over `bos`, `mean` or `late` pooling
    (`config.classifier_pooling`; Hub-era configs call it `clf_pooling`): the sequence-classification and
    multiple-choice models."""

    def __init__(self, config: EuroBertConfig, num_outputs: int):
        super().__init__(config)
        self.model = EuroBertModel(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()
        self.classifier = nn.Linear(config.hidden_size, num_outputs)
        self.post_init()

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(self.dense(features)))

    def pooled_logits(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """`(batch, seq_len, hidden)` → `(batch, num_outputs)`, padding never counted."""
        pooling = self.config.classifier_pooling
        if pooling == "late":
            return _masked_mean(self._head(hidden_states), attention_mask)
        if pooling == "bos":
            return self._head(_first_token(hidden_states, attention_mask))
        return self._head(_masked_mean(hidden_states, attention_mask))


class EuroBertForMaskedLM(EuroBertPreTrainedModel):
    """EuroBERT with its masked-language-modelling head (untied unless `tie_word_embeddings=True`). The official
    checkpoints are saved as this class."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"} if _TRANSFORMERS_5 else ["lm_head.weight"]
    _tp_plan = {"lm_head": "colwise_gather_output" if _TRANSFORMERS_5 else "colwise_rep"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.model = EuroBertModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.mlp_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
            Token ids to predict at masked positions, -100 elsewhere.
        """
        outputs = self.model(input_ids, attention_mask, position_ids, inputs_embeds, return_dict=True, **kwargs)
        hidden_states = outputs.last_hidden_state
        if attention_mask is not None and is_capturing_graph():
            # A graph cannot select the real tokens by value: project every position and zero the padding.
            logits = self.lm_head(hidden_states).masked_fill(~attention_mask.bool()[..., None], 0.0)
        elif attention_mask is not None and not bool(attention_mask.all()):
            # The vocabulary projection is the largest matmul of the model: run it on real tokens only.
            keep = attention_mask.bool()
            logits = hidden_states.new_zeros((*keep.shape, self.config.vocab_size))
            logits[keep] = self.lm_head(hidden_states[keep])
        else:
            logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EuroBertForSequenceClassification(EuroBertPooledClassifier):
    """EuroBERT with a `dense → GELU → classifier` head and `bos`, `mean` or `late` pooling."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config, num_outputs=config.num_labels)
        self.num_labels = config.num_labels

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot floats (multi-label) or targets (regression, `num_labels == 1`).
        """
        outputs = self.model(input_ids, attention_mask, position_ids, inputs_embeds, return_dict=True, **kwargs)
        logits = self.pooled_logits(outputs.last_hidden_state, attention_mask)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EuroBertForTokenClassification(EuroBertPreTrainedModel):
    """EuroBERT with a linear `classifier` on every token (named-entity recognition, tagging)."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = EuroBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
            Class index per token, -100 for tokens to ignore.
        """
        outputs = self.model(input_ids, attention_mask, position_ids, inputs_embeds, return_dict=True, **kwargs)
        logits = self.classifier(outputs.last_hidden_state)
        loss = self.loss_function(logits, labels, self.config, **kwargs) if labels is not None else None
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class EuroBertForQuestionAnswering(EuroBertPreTrainedModel):
    """EuroBERT with a span-extraction head (`qa_outputs`: start and end logits per token), SQuAD-style."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.num_labels = 2
        self.model = EuroBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | QuestionAnsweringModelOutput:
        r"""
        start_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the first token of the answer span; positions outside the sequence are ignored.
        end_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the last token of the answer span.
        """
        outputs = self.model(input_ids, attention_mask, position_ids, inputs_embeds, return_dict=True, **kwargs)
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)
        if attention_mask is not None:
            # Padding can never be part of an answer span.
            padding = ~attention_mask.bool().to(start_logits.device)
            start_logits = start_logits.masked_fill(padding, torch.finfo(start_logits.dtype).min)
            end_logits = end_logits.masked_fill(padding, torch.finfo(end_logits.dtype).min)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class EuroBertForMultipleChoice(EuroBertPooledClassifier):
    """EuroBERT scoring each choice with the sequence-classification head layout (`dense → GELU → classifier`,
    one logit per choice) and the configured pooling."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config, num_outputs=1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | MultipleChoiceModelOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, num_choices, seq_len)`):
            One row per (example, choice) pair.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the correct choice.
        """
        reference = input_ids if input_ids is not None else inputs_embeds
        expected_dims = 3 if input_ids is not None else 4
        if reference is None or reference.dim() != expected_dims:
            raise ValueError(
                "EuroBertForMultipleChoice expects input_ids of shape (batch_size, num_choices, seq_len) or "
                "inputs_embeds of shape (batch_size, num_choices, seq_len, hidden_size); got "
                f"{None if reference is None else tuple(reference.shape)}."
            )
        num_choices = reference.shape[1]

        def flatten_choices(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.flatten(0, 1)

        attention_mask = flatten_choices(attention_mask)
        outputs = self.model(
            flatten_choices(input_ids),
            attention_mask,
            flatten_choices(position_ids),
            flatten_choices(inputs_embeds),
            return_dict=True,
            **kwargs,
        )
        logits = self.pooled_logits(outputs.last_hidden_state, attention_mask).view(reference.shape[0], num_choices)
        loss = F.cross_entropy(logits.float(), labels.to(logits.device)) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "EuroBertPreTrainedModel",
    "EuroBertModel",
    "EuroBertForMaskedLM",
    "EuroBertForSequenceClassification",
    "EuroBertForTokenClassification",
    "EuroBertForQuestionAnswering",
    "EuroBertForMultipleChoice",
]
