"""SQuAD exact match and token F1 for extractive question answering, in the input format of `evaluate`'s "squad"."""

import datasets
import evaluate

from .text import normalize_answer, token_f1


class SquadMetric(evaluate.Metric):
    """Exact match and token F1 after SQuAD normalisation, best over the gold answers, averaged, in percent.

    Inputs follow `evaluate`'s "squad" metric: `predictions=[{"id", "prediction_text"}]`,
    `references=[{"id", "answers": {"text": [...], "answer_start": [...]}}]`. Returns `{"exact_match", "f1"}`.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="SQuAD v1 exact match and F1 (lowercase, no punctuation, no articles, single spaces).",
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description=(
                "predictions (`list[dict]`): `{'id': str, 'prediction_text': str}`. references (`list[dict]`): "
                "`{'id': str, 'answers': {'text': list[str], 'answer_start': list[int]}}`."
            ),
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions: list[dict], references: list[dict]) -> dict[str, float]:
        predicted_text = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        if not references:
            raise ValueError("SquadMetric needs at least one reference; got an empty list.")
        exact_match = f1 = 0.0
        for reference in references:
            if reference["id"] not in predicted_text:
                raise ValueError(f"No prediction for question id {reference['id']!r}; predict every question.")
            gold_answers = [normalize_answer(text) for text in reference["answers"]["text"]]
            if not gold_answers:
                raise ValueError(f"Question {reference['id']!r} has no gold answer text.")
            prediction = normalize_answer(predicted_text[reference["id"]])
            exact_match += max(float(prediction == gold) for gold in gold_answers)
            f1 += max(token_f1(prediction.split(), gold.split()) for gold in gold_answers)
        return {"exact_match": 100 * exact_match / len(references), "f1": 100 * f1 / len(references)}
