"""EuroBERT as a sentence-embedding model: a folder that `sentence_transformers.SentenceTransformer` loads.

The folder is written without importing sentence-transformers (an optional extra, `pip install eurobert-hf[embeddings]`):
the encoder at the root (with its tokenizer and, by default, EuroBERT's remote code), then sentence-transformers'
module files: `modules.json`, `sentence_bert_config.json`, `config_sentence_transformers.json`, `1_Pooling/config.json`
and, when normalising, a `2_Normalize` module.
"""

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from .cards import render_eurobert_model_card
from .saving import model_folder_staging, write_model_folder

EMBEDDING_POOLINGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def _write_json(path: Path, content: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def sentence_transformers_files(
    hidden_size: int, *, pooling: str = "mean", normalize: bool = True, max_seq_length: int = 512
) -> dict[str, dict | list]:
    """The sentence-transformers module files (relative path -> JSON content) for an encoder at the folder's root."""
    if pooling not in EMBEDDING_POOLINGS:
        raise ValueError(f"Unknown embedding pooling {pooling!r}; expected one of {sorted(EMBEDDING_POOLINGS)}.")
    if max_seq_length < 1:
        raise ValueError(f"`max_seq_length` must be a positive number of tokens, got {max_seq_length}.")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    pooling_config: dict[str, Any] = {"word_embedding_dimension": hidden_size}
    pooling_config |= {mode: mode == EMBEDDING_POOLINGS[pooling] for mode in _POOLING_MODES}
    pooling_config["include_prompt"] = True
    return {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": pooling_config,
    }


def save_sentence_transformer(
    model: Any,
    tokenizer: Any,
    save_directory: str | os.PathLike,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int | None = None,
    model_card: ModelCard | None = None,
    remote_code: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Saves a EuroBERT encoder as a sentence-transformers embedding model, atomically.

    `SentenceTransformer(path)` then embeds with masked mean (or first-token) pooling and, by default, L2
    normalisation. It loads into the plugin's classes when `eurobert_hf` is imported, with `trust_remote_code=True`
    anywhere (the folder carries EuroBERT's remote code), and into native transformers' EuroBERT on 5.3 and later.

    Args:
        model (`EuroBertModel` or any EuroBERT head):
            The encoder; for a head model, its backbone (`model.base_model`) is saved.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer (saved at the folder's root).
        save_directory (`str` or `os.PathLike`):
            The output folder.
        pooling (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (masked mean over tokens) or `"cls"` (the first token, EuroBERT's `<|begin_of_text|>`).
        normalize (`bool`, *optional*, defaults to `True`):
            Whether embeddings are L2-normalised (cosine similarity becomes a dot product).
        max_seq_length (`int`, *optional*):
            Truncation length; defaults to the smaller of `model_max_length` and `max_position_embeddings`.
        model_card (`ModelCard`, *optional*):
            Saved as `README.md`; defaults to `render_eurobert_model_card(<folder name>, task="sentence-similarity")`.
        remote_code (`bool`, *optional*), overwrite (`bool`, *optional*, defaults to `False`):
            As in `save_for_hub`.

    Returns:
        `Path`: the saved folder.
    """
    if tokenizer is None:
        raise ValueError("A sentence-transformers folder needs the model's tokenizer; pass `tokenizer=`.")
    encoder = model.base_model
    if getattr(encoder.config, "model_type", None) != "eurobert":
        raise ValueError(f"Expected a EuroBERT model, got a {type(model).__name__}.")
    limit = encoder.config.max_position_embeddings
    if max_seq_length is None:
        max_seq_length = min(limit, getattr(tokenizer, "model_max_length", limit) or limit)
    files = sentence_transformers_files(
        encoder.config.hidden_size, pooling=pooling, normalize=normalize, max_seq_length=max_seq_length
    )
    if model_card is None:
        model_card = render_eurobert_model_card(
            Path(save_directory).name,
            task="sentence-similarity",
            model=encoder,
            remote_code=remote_code is not False,
            pooling=pooling,
            normalize=normalize,
        )
    with model_folder_staging(save_directory, overwrite=overwrite) as staging:
        write_model_folder(encoder, staging, tokenizer=tokenizer, model_card=model_card, remote_code=remote_code)
        for relative_path, content in files.items():
            _write_json(staging / relative_path, content)
        if normalize:
            # Git (and so the Hub) keeps no empty folders, and sentence-transformers reads nothing from this one.
            (staging / "2_Normalize").mkdir()
    return Path(save_directory)
