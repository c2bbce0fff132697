"""ROUGE-L and token F1 of generated answers against reference answers (the metrics of the ULD paper)."""

import datasets
import evaluate

from .text import normalize_answer, token_f1, word_tokens

_GENERATION_FEATURES = [
    datasets.Features(
        {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
    ),
    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
]
_INPUTS = (
    "predictions (`list[str]`): generated texts. references (`list[str]` or `list[list[str]]`): one or several "
    "reference texts per prediction (the best-matching one counts)."
)


def _as_reference_lists(references: list) -> list[list[str]]:
    reference_lists = [[reference] if isinstance(reference, str) else list(reference) for reference in references]
    if any(not reference_list for reference_list in reference_lists):
        raise ValueError("Every prediction needs at least one reference text; got an empty reference list.")
    return reference_lists


def _longest_common_subsequence(first: list[str], second: list[str]) -> int:
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for column, other in enumerate(second):
            current.append(previous[column] + 1 if item == other else max(previous[column + 1], current[column]))
        previous = current
    return previous[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (β = 1) on lowercased word tokens; 0.0 when either side has no token (as `rouge_score`)."""
    prediction_tokens, reference_tokens = word_tokens(prediction), word_tokens(reference)
    if not prediction_tokens or not reference_tokens:
        return 0.0
    common = _longest_common_subsequence(prediction_tokens, reference_tokens)
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction_tokens), common / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
    """Mean ROUGE-L F-measure over the examples, in [0, 1]. Returns `{"rougeL": float}`.

    Tokens are lowercased Unicode words (`\\w+`), so accented and non-Latin text is scored (the `rouge_score` default
    tokenizer keeps only ASCII letters and digits). No stemming.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="ROUGE-L: F-measure of the longest common token subsequence.",
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL Workshop 2004.",
            inputs_description=_INPUTS,
            features=_GENERATION_FEATURES,
        )

    def _compute(self, predictions: list[str], references: list) -> dict[str, float]:
        if not predictions:
            raise ValueError("RougeL needs at least one prediction; got an empty list.")
        scores = [
            max(rouge_l_f1(prediction, reference) for reference in reference_list)
            for prediction, reference_list in zip(predictions, _as_reference_lists(references))
        ]
        return {"rougeL": sum(scores) / len(scores)}


class TokenF1(evaluate.Metric):
    """Mean bag-of-tokens F1 after SQuAD normalisation, in [0, 1]. Returns `{"token_f1": float}`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Token F1: harmonic mean of token precision and recall after SQuAD normalisation.",
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description=_INPUTS,
            features=_GENERATION_FEATURES,
        )

    def _compute(self, predictions: list[str], references: list) -> dict[str, float]:
        if not predictions:
            raise ValueError("TokenF1 needs at least one prediction; got an empty list.")
        scores = [
            max(
                token_f1(normalize_answer(prediction).split(), normalize_answer(ref).split()) for ref in reference_list
            )
            for prediction, reference_list in zip(predictions, _as_reference_lists(references))
        ]
        return {"token_f1": sum(scores) / len(scores)}
