"""Accuracy and macro-averaged F1 for (single-label) classification."""

import datasets
import evaluate

_CLASS_IDS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class Accuracy(evaluate.Metric):
    """Fraction of predicted class ids equal to the reference ids. Returns `{"accuracy": float}` in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy: the fraction of predictions equal to their reference.",
            citation="",
            inputs_description="predictions (`list[int]`): predicted class ids. references (`list[int]`): gold ids.",
            features=_CLASS_IDS,
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("Accuracy needs at least one prediction; got an empty list.")
        correct = sum(int(prediction == reference) for prediction, reference in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}


class MacroF1(evaluate.Metric):
    """Unweighted mean over classes of the per-class F1 (one-vs-rest). Returns `{"f1": float}` in [0, 1].

    The classes are those seen in the references or the predictions; pass `labels` to `compute` to fix them (a class
    with no reference and no prediction then scores 0, as in scikit-learn).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Macro-averaged F1: the mean of the per-class F1 scores.",
            citation="",
            inputs_description=(
                "predictions (`list[int]`): predicted class ids. references (`list[int]`): gold ids. "
                "labels (`list[int]`, *optional*): the classes to average over."
            ),
            features=_CLASS_IDS,
        )

    def _compute(
        self, predictions: list[int], references: list[int], labels: list[int] | None = None
    ) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("MacroF1 needs at least one prediction; got an empty list.")
        classes = sorted(set(references) | set(predictions)) if labels is None else list(labels)
        if not classes:
            raise ValueError("MacroF1 got an empty `labels` list; pass the class ids to average over.")
        scores = []
        for label in classes:
            true_positives = sum(int(p == label and r == label) for p, r in zip(predictions, references))
            predicted = sum(int(p == label) for p in predictions)
            actual = sum(int(r == label) for r in references)
            denominator = predicted + actual
            scores.append(2 * true_positives / denominator if denominator else 0.0)
        return {"f1": sum(scores) / len(scores)}
