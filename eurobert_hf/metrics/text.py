"""Text normalisation shared by the answer-matching metrics (SQuAD, token-F1, ROUGE-L)."""

import re
import string
import unicodedata
from collections import Counter

_ENGLISH_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)
_WORD = re.compile(r"\w+", flags=re.UNICODE)


def _is_punctuation(char: str) -> bool:
    # SQuAD strips ASCII `string.punctuation`; Unicode punctuation («», ¿, ¡, …) is stripped too so that answers in
    # other languages are normalised the same way.
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lowercase, strip punctuation and English articles, collapse whitespace."""
    text = "".join(char for char in text.lower() if not _is_punctuation(char))
    text = _ENGLISH_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def word_tokens(text: str) -> list[str]:
    """Lowercased word tokens (Unicode letters and digits), the tokenisation used by ROUGE-L."""
    return _WORD.findall(text.lower())


def token_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    """Bag-of-tokens F1 between two token lists; two empty lists match (1.0), one empty list scores 0.0."""
    if not prediction_tokens or not reference_tokens:
        return float(prediction_tokens == reference_tokens)
    overlap = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)
