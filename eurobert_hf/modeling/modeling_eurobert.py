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
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_eurobert import EuroBertConfig

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


@dataclass
class PackedSequences:
    """Where the real tokens of a batch sit once packed into one row.

    Attributes:
        cu_seqlens (`torch.IntTensor` of shape `(num_sequences + 1,)`):
            Cumulative sequence lengths in the packed row (the flash-attention convention).
        lengths (`list[int]`):
            Length of each sequence, on the host (used to split the row without device syncs per layer).
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

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

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


class EuroBertRotaryEmbedding(nn.Module):
    """Rotary position embeddings ("rotate half" convention), with the RoPE scaling types transformers provides."""

    def __init__(self, config: EuroBertConfig, device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        inv_freq, self.attention_scaling = self.compute_inv_freq(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @staticmethod
    def compute_inv_freq(config: EuroBertConfig, device: torch.device | None = None) -> tuple[torch.Tensor, float]:
        rope_type = config.rope_parameters["rope_type"]
        if rope_type == "default":
            # Computed here rather than through transformers: its "default" entry moved between releases.
            base = config.rope_parameters["rope_theta"]
            exponents = torch.arange(0, config.head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
            return 1.0 / (base ** (exponents / config.head_dim)), 1.0
        return ROPE_INIT_FUNCTIONS[rope_type](config, device)

    @torch.no_grad()
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

    def _attention_interface(self) -> Callable:
        implementation = self.config._attn_implementation or "eager"
        if implementation == "eager":
            return eager_attention_forward
        return ALL_ATTENTION_FUNCTIONS[implementation]

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        packed_sequences: PackedSequences | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)

        dropout = self.attention_dropout if self.training else 0.0
        if packed_sequences is None:
            attn_output, attn_weights = self._attention_interface()(
                self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling, **kwargs
            )
        else:
            attn_output, attn_weights = self._packed_attention(query, key, value, packed_sequences, dropout, **kwargs)

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights

    def _packed_attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        packed: PackedSequences,
        dropout: float,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        """Attention over one packed row `(1, heads, num_tokens, head_dim)`, never across sequence boundaries."""
        implementation = self.config._attn_implementation or "eager"
        if implementation.startswith("flash_attention"):
            return self._attention_interface()(
                self,
                query,
                key,
                value,
                None,
                dropout=dropout,
                scaling=self.scaling,
                cu_seq_lens_q=packed.cu_seqlens,
                cu_seq_lens_k=packed.cu_seqlens,
                max_length_q=packed.max_seqlen,
                max_length_k=packed.max_seqlen,
                **kwargs,
            )
        if implementation == "flex_attention":
            return self._attention_interface()(
                self, query, key, value, _document_block_mask(packed, query), scaling=self.scaling, **kwargs
            )
        if implementation == "sdpa" and _can_use_torch_varlen(query, dropout):
            gqa_kwargs = {"enable_gqa": True} if _VARLEN_HAS_GQA and self.num_key_value_groups > 1 else {}
            if self.num_key_value_groups > 1 and not _VARLEN_HAS_GQA:
                key, value = repeat_kv(key, self.num_key_value_groups), repeat_kv(value, self.num_key_value_groups)
            output = varlen_attn(
                query[0].transpose(0, 1),
                key[0].transpose(0, 1),
                value[0].transpose(0, 1),
                packed.cu_seqlens,
                packed.cu_seqlens,
                packed.max_seqlen,
                packed.max_seqlen,
                scale=self.scaling,
                **gqa_kwargs,
            )
            return output.unsqueeze(0), None
        # One kernel call per sequence: exact, and no FLOP is spent on padding (cheap on CPU, where calls are cheap).
        interface = self._attention_interface()
        outputs = [
            interface(self, q, k, v, None, dropout=dropout, scaling=self.scaling, **kwargs)[0]
            for q, k, v in zip(
                query.split(packed.lengths, dim=2),
                key.split(packed.lengths, dim=2),
                value.split(packed.lengths, dim=2),
            )
        ]
        return torch.cat(outputs, dim=1), None


def _can_use_torch_varlen(query: torch.Tensor, dropout: float) -> bool:
    return (
        varlen_attn is not None
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and dropout == 0.0
        and not torch.compiler.is_compiling()
    )


def _document_block_mask(packed: PackedSequences, query: torch.Tensor):
    if create_block_mask is None:
        raise ValueError("flex_attention needs torch.nn.attention.flex_attention; upgrade torch or use sdpa.")
    num_tokens = query.shape[2]
    document_ids = torch.repeat_interleave(
        torch.arange(packed.num_sequences, device=query.device),
        torch.tensor(packed.lengths, device=query.device),
    )

    def same_document(batch_idx, head_idx, q_idx, kv_idx):
        return document_ids[q_idx] == document_ids[kv_idx]

    return create_block_mask(same_document, B=None, H=None, Q_LEN=num_tokens, KV_LEN=num_tokens, device=query.device)


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
        packed_sequences: PackedSequences | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            packed_sequences=packed_sequences,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, attn_weights


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
            inv_freq, _ = module.compute_inv_freq(module.config, module.inv_freq.device)
            with torch.no_grad():
                module.inv_freq.copy_(inv_freq)

    def _encode(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor | None,
        output_attentions: bool | None,
        output_hidden_states: bool | None,
        kwargs: dict,
    ) -> BaseModelOutput:
        """Runs a head's backbone (`self.model`); the trainer's loss bookkeeping stays with the head."""
        return self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **{key: value for key, value in kwargs.items() if key != "num_items_in_batch"},
        )


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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Token ids. Exactly one of `input_ids` and `inputs_embeds` is required.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 for real tokens, 0 for padding. Padding positions are skipped entirely; their outputs are zeros.
            position_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                Positions; positions restarting at 0 inside a single row mark packed sequences (as produced by
                `DataCollatorWithFlattening`), which then never attend to each other.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`, *optional*):
                Embeddings to use instead of `input_ids`.
            output_attentions (`bool`, *optional*):
                Return the attention probabilities of every layer (requires `attn_implementation="eager"`).
            output_hidden_states (`bool`, *optional*):
                Return the hidden states after the embeddings and after every layer.
            return_dict (`bool`, *optional*):
                Return a [`~modeling_outputs.BaseModelOutput`] instead of a tuple.
            kwargs:
                `cu_seq_lens_q` (with `max_length_q`) describes packed sequences directly, as flash-attention
                collators provide them.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("EuroBertModel needs exactly one of `input_ids` and `inputs_embeds`.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(
                f"Input of {seq_len} tokens is longer than max_position_embeddings "
                f"({self.config.max_position_embeddings}): truncate it (tokenizer(..., truncation=True, "
                f"max_length={self.config.max_position_embeddings})) or extend the context with RoPE scaling."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (batch_size, seq_len):
            raise ValueError(
                f"attention_mask must have shape (batch_size, seq_len) = {(batch_size, seq_len)}, got "
                f"{tuple(attention_mask.shape)}. Pass the tokenizer's 2D attention_mask (1 = token, 0 = padding)."
            )
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError(
                "output_attentions=True needs the eager attention: load the model with attn_implementation='eager'."
            )
        cu_seq_lens = kwargs.pop("cu_seq_lens_q", None)
        for key in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
            kwargs.pop(key, None)

        if position_ids is None:
            position_ids = torch.arange(seq_len, device=inputs_embeds.device).unsqueeze(0).expand(batch_size, -1)
        elif tuple(position_ids.shape) != (batch_size, seq_len) and tuple(position_ids.shape) != (1, seq_len):
            raise ValueError(
                f"position_ids must have shape (batch_size, seq_len) = {(batch_size, seq_len)}, got "
                f"{tuple(position_ids.shape)}."
            )

        packed, attention_mask = self._plan_packing(attention_mask, position_ids, cu_seq_lens, output_attentions)
        padding = ~attention_mask.bool()[..., None] if attention_mask is not None else None
        hidden_states = inputs_embeds
        if packed is not None and packed.indices is not None:
            hidden_states = packed.pack(hidden_states)
            position_ids = packed.pack(position_ids.expand(batch_size, -1))
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        if attention_mask is not None:
            attention_mask = self._expand_padding_mask(attention_mask, hidden_states.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=attention_mask,
                packed_sequences=packed,
                **kwargs,
            )
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        if packed is not None and packed.indices is not None:
            hidden_states = packed.unpack(hidden_states)
            if output_hidden_states:
                all_hidden_states = tuple(packed.unpack(state) for state in all_hidden_states)
        elif padding is not None:
            # The padded path computes outputs at padding positions too; zero them as the packed path does.
            hidden_states = hidden_states.masked_fill(padding, 0.0)
            if output_hidden_states:
                all_hidden_states = tuple(state.masked_fill(padding, 0.0) for state in all_hidden_states)

        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states, all_attentions) if v is not None)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )

    def _plan_packing(
        self,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cu_seq_lens: torch.Tensor | None,
        output_attentions: bool,
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
        if output_attentions:
            # Attention maps are returned in the padded layout, so this path keeps the padded computation.
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


def _pool_and_classify(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str, head: nn.Module
) -> torch.Tensor:
    """Applies `head` (dense → GELU → classifier) with EuroBERT's `bos`, `mean` or `late` pooling."""
    if pooling == "late":
        return _masked_mean(head(hidden_states), attention_mask)
    pooled = hidden_states[:, 0] if pooling == "bos" else _masked_mean(hidden_states, attention_mask)
    return head(pooled)


def _token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over tokens (labels -100 ignored), in float32; summed then divided by `num_items_in_batch`
    when the trainer gives it, so that gradient accumulation does not change the loss."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def _sequence_classification_loss(config: EuroBertConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Regression, single- or multi-label loss, choosing and recording `config.problem_type` the transformers way."""
    labels = labels.to(logits.device)
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze().float(), labels.squeeze().float())
        return F.mse_loss(logits.float(), labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels).float(), labels.view(-1))
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.dtype).float())
    raise ValueError(
        f"Unknown problem_type {config.problem_type!r}; use 'regression', 'single_label_classification' or "
        "'multi_label_classification'."
    )


class EuroBertForMaskedLM(EuroBertPreTrainedModel):
    """EuroBERT with its (untied) masked-language-modelling head. The official checkpoints are saved as this class."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.model = EuroBertModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.mlp_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
            Token ids to predict at masked positions, -100 elsewhere.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states, kwargs
        )
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
            loss = _token_cross_entropy(logits, labels, kwargs.get("num_items_in_batch"))
        output = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EuroBertForSequenceClassification(EuroBertPreTrainedModel):
    """EuroBERT with a `dense → GELU → classifier` head and `bos`, `mean` or `late` pooling
    (`config.classifier_pooling`; Hub-era configs call it `clf_pooling`)."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = EuroBertModel(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _classification_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(self.dense(features)))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot floats (multi-label) or targets (regression, `num_labels == 1`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states, kwargs
        )
        logits = _pool_and_classify(
            outputs.last_hidden_state, attention_mask, self.config.classifier_pooling, self._classification_head
        )
        loss = _sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EuroBertForTokenClassification(EuroBertPreTrainedModel):
    """EuroBERT with a linear `classifier` on every token (named-entity recognition, tagging)."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = EuroBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
            Class index per token, -100 for tokens to ignore.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states, kwargs
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = _token_cross_entropy(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class EuroBertForQuestionAnswering(EuroBertPreTrainedModel):
    """EuroBERT with a span-extraction head (`qa_outputs`: start and end logits per token), SQuAD-style."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.num_labels = 2
        self.model = EuroBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | QuestionAnsweringModelOutput:
        r"""
        start_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the first token of the answer span; positions outside the sequence are ignored.
        end_positions (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the last token of the answer span.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self._encode(
            input_ids, attention_mask, position_ids, inputs_embeds, output_attentions, output_hidden_states, kwargs
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        if attention_mask is not None:
            # Padding can never be part of an answer span.
            padding = ~attention_mask.bool().to(start_logits.device)
            start_logits = start_logits.masked_fill(padding, torch.finfo(start_logits.dtype).min)
            end_logits = end_logits.masked_fill(padding, torch.finfo(end_logits.dtype).min)

        loss = None
        if start_positions is not None and end_positions is not None:
            ignored_index = start_logits.size(1)
            start_positions = start_positions.reshape(-1).clamp(0, ignored_index).to(start_logits.device)
            end_positions = end_positions.reshape(-1).clamp(0, ignored_index).to(end_logits.device)
            start_loss = F.cross_entropy(start_logits.float(), start_positions, ignore_index=ignored_index)
            end_loss = F.cross_entropy(end_logits.float(), end_positions, ignore_index=ignored_index)
            loss = (start_loss + end_loss) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class EuroBertForMultipleChoice(EuroBertPreTrainedModel):
    """EuroBERT scoring each choice with the sequence-classification head layout (`dense → GELU → classifier`,
    one logit per choice) and the configured pooling."""

    def __init__(self, config: EuroBertConfig):
        super().__init__(config)
        self.model = EuroBertModel(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def _classification_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.activation(self.dense(features)))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | MultipleChoiceModelOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, num_choices, seq_len)`):
            One row per (example, choice) pair.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Index of the correct choice.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("EuroBertForMultipleChoice needs exactly one of `input_ids` and `inputs_embeds`.")
        expected_dims = 3 if input_ids is not None else 4
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference.dim() != expected_dims:
            raise ValueError(
                "EuroBertForMultipleChoice expects inputs of shape (batch_size, num_choices, seq_len"
                f"{'' if input_ids is not None else ', hidden_size'}); got {tuple(reference.shape)}."
            )
        num_choices = reference.shape[1]

        def flatten_choices(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.reshape(-1, *tensor.shape[2:])

        attention_mask_flat = flatten_choices(attention_mask)
        outputs = self._encode(
            flatten_choices(input_ids),
            attention_mask_flat,
            flatten_choices(position_ids),
            flatten_choices(inputs_embeds),
            output_attentions,
            output_hidden_states,
            kwargs,
        )
        scores = _pool_and_classify(
            outputs.last_hidden_state, attention_mask_flat, self.config.classifier_pooling, self._classification_head
        )
        logits = scores.view(reference.shape[0], num_choices)
        loss = F.cross_entropy(logits.float(), labels.to(logits.device)) if labels is not None else None
        output = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "EuroBertPreTrainedModel",
    "EuroBertModel",
    "EuroBertForMaskedLM",
    "EuroBertForSequenceClassification",
    "EuroBertForTokenClassification",
    "EuroBertForQuestionAnswering",
    "EuroBertForMultipleChoice",
]
