"""Entity-level precision, recall and F1 for BIO (IOB2) tagged sequences, as seqeval computes them by default."""

from collections import Counter

import datasets
import evaluate

Entity = tuple[str, int, int]


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, separator, entity_type = tag.partition("-")
    if prefix not in ("B", "I") or not separator or not entity_type:
        raise ValueError(
            f"Tag {tag!r} is not a BIO tag. Use 'O', 'B-<TYPE>' or 'I-<TYPE>' (map label ids to names first)."
        )
    return prefix, entity_type


def extract_entities(tags: list[str]) -> list[Entity]:
    """The entity spans `(type, first_index, last_index)` of one BIO-tagged sequence.

    Like conlleval and seqeval's default mode, an `I-X` that follows `O` or a tag of another type starts an entity.
    """
    entities: list[Entity] = []
    current_type, start = None, 0
    for index, tag in enumerate(tags):
        prefix, entity_type = _split_tag(tag)
        continues = prefix == "I" and entity_type == current_type
        if current_type is not None and not continues:
            entities.append((current_type, start, index - 1))
            current_type = None
        if prefix != "O" and not continues:
            current_type, start = entity_type, index
    if current_type is not None:
        entities.append((current_type, start, len(tags) - 1))
    return entities


def _precision_recall_f1(correct: int, predicted: int, actual: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


class SeqEvalF1(evaluate.Metric):
    """Entity-level scores over exact spans with their type, plus token accuracy, in the `seqeval` output format.

    Returns `overall_precision`, `overall_recall`, `overall_f1`, `overall_accuracy` and, per entity type, a dict with
    `precision`, `recall`, `f1` and `number` (the count of reference entities).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Entity-level precision/recall/F1 for BIO tagging (seqeval's default, conlleval-style).",
            citation="",
            inputs_description=(
                "predictions (`list[list[str]]`): predicted BIO tags per sequence. "
                "references (`list[list[str]]`): gold BIO tags, same lengths."
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict:
        predicted_entities: set[tuple[int, Entity]] = set()
        reference_entities: set[tuple[int, Entity]] = set()
        correct_tokens = total_tokens = 0
        for sequence, (predicted_tags, reference_tags) in enumerate(zip(predictions, references)):
            if len(predicted_tags) != len(reference_tags):
                raise ValueError(
                    f"Sequence {sequence} has {len(predicted_tags)} predicted tags but {len(reference_tags)} "
                    "reference tags; drop the ignored (-100) positions from both before computing."
                )
            predicted_entities.update((sequence, entity) for entity in extract_entities(predicted_tags))
            reference_entities.update((sequence, entity) for entity in extract_entities(reference_tags))
            correct_tokens += sum(int(p == r) for p, r in zip(predicted_tags, reference_tags))
            total_tokens += len(reference_tags)
        if total_tokens == 0:
            raise ValueError("SeqEvalF1 needs at least one tagged token; got only empty sequences.")

        correct = predicted_entities & reference_entities
        results: dict = {}
        count_by_type = {
            name: Counter(entity[0] for _, entity in entities)
            for name, entities in (
                ("correct", correct),
                ("predicted", predicted_entities),
                ("actual", reference_entities),
            )
        }
        for entity_type in sorted(count_by_type["actual"] | count_by_type["predicted"]):
            scores = _precision_recall_f1(
                *(count_by_type[name][entity_type] for name in ("correct", "predicted", "actual"))
            )
            results[entity_type] = {**scores, "number": count_by_type["actual"][entity_type]}
        overall = _precision_recall_f1(len(correct), len(predicted_entities), len(reference_entities))
        results.update({f"overall_{name}": value for name, value in overall.items()})
        results["overall_accuracy"] = correct_tokens / total_tokens
        return results
