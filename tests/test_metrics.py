"""The package's `evaluate` metrics against hand-computed values (each worked example is written out)."""

import evaluate
import pytest

from eurobert_hf.metrics import (
    Accuracy,
    MacroF1,
    RougeL,
    SeqEvalF1,
    SquadMetric,
    TokenF1,
    extract_entities,
    normalize_answer,
    word_tokens,
)


def test_metrics_are_evaluate_metrics_with_features():
    for metric_class in (Accuracy, MacroF1, RougeL, SeqEvalF1, SquadMetric, TokenF1):
        metric = metric_class()
        assert isinstance(metric, evaluate.Metric)
        assert metric.info.features is not None


def test_accuracy_hand_computed():
    # predictions 0 1 1 0 2 / references 0 1 0 1 2: positions 0, 1, 4 agree -> 3/5.
    result = Accuracy().compute(predictions=[0, 1, 1, 0, 2], references=[0, 1, 0, 1, 2])
    assert result == {"accuracy": pytest.approx(0.6)}


def test_accuracy_accumulates_batches():
    metric = Accuracy()
    metric.add_batch(predictions=[1, 1], references=[1, 0])
    metric.add_batch(predictions=[0], references=[0])
    assert metric.compute()["accuracy"] == pytest.approx(2 / 3)


def test_macro_f1_hand_computed():
    # references  0 0 1 1 2 2 / predictions 0 1 1 1 2 0
    # class 0: TP 1, predicted 2, actual 2 -> F1 = 2*1/(2+2) = 0.5
    # class 1: TP 2, predicted 3, actual 2 -> F1 = 4/5 = 0.8
    # class 2: TP 1, predicted 1, actual 2 -> F1 = 2/3
    # macro = (0.5 + 0.8 + 2/3) / 3
    result = MacroF1().compute(predictions=[0, 1, 1, 1, 2, 0], references=[0, 0, 1, 1, 2, 2])
    assert result["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_fixed_labels_count_absent_class_as_zero():
    # classes 0 and 1 perfect (F1 1.0 each), class 2 never seen -> (1 + 1 + 0) / 3.
    result = MacroF1().compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2])
    assert result["f1"] == pytest.approx(2 / 3)


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="at least one"):
        Accuracy().compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="at least one"):
        MacroF1().compute(predictions=[], references=[])


def test_extract_entities_bio_and_lenient_i_start():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O"]
    # B-PER I-PER -> PER(0,1); I-LOC after O starts LOC(3,4); B-LOC starts LOC(5,5); I-ORG after LOC starts ORG(6,6).
    assert extract_entities(tags) == [("PER", 0, 1), ("LOC", 3, 4), ("LOC", 5, 5), ("ORG", 6, 6)]
    assert extract_entities(["B-MISC", "I-MISC"]) == [("MISC", 0, 1)]


def test_extract_entities_rejects_non_bio_tags():
    with pytest.raises(ValueError, match="not a BIO tag"):
        extract_entities(["B-PER", "E-PER"])
    with pytest.raises(ValueError, match="not a BIO tag"):
        extract_entities(["3"])


def test_seqeval_f1_hand_computed():
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-PER"]]
    # reference entities: PER(0-1), LOC(3), ORG(0), PER(2) = 4; predicted: PER(0-1), ORG(3), ORG(0), PER(2) = 4;
    # correct: PER(0-1), ORG(0), PER(2) = 3 -> precision 3/4, recall 3/4, F1 3/4. Tokens: 6 of 7 agree.
    # per type: PER 2/2 correct; LOC 0 predicted, 1 actual; ORG 1 correct of 2 predicted, 1 actual.
    result = SeqEvalF1().compute(predictions=predictions, references=references)
    assert result["overall_precision"] == pytest.approx(0.75)
    assert result["overall_recall"] == pytest.approx(0.75)
    assert result["overall_f1"] == pytest.approx(0.75)
    assert result["overall_accuracy"] == pytest.approx(6 / 7)
    assert result["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 2}
    assert result["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert result["ORG"]["precision"] == pytest.approx(0.5)
    assert result["ORG"]["recall"] == pytest.approx(1.0)
    assert result["ORG"]["f1"] == pytest.approx(2 / 3)
    assert result["ORG"]["number"] == 1


def test_seqeval_partial_span_is_wrong():
    # reference PER spans tokens 0-2, prediction only 0-1: an inexact span is a miss (precision 0, recall 0).
    result = SeqEvalF1().compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "I-PER"]])
    assert result["overall_f1"] == 0.0
    assert result["overall_accuracy"] == pytest.approx(2 / 3)


def test_seqeval_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 predicted tags but 3 reference tags"):
        SeqEvalF1().compute(predictions=[["O", "O"]], references=[["O", "O", "O"]])


def test_normalize_answer():
    assert normalize_answer("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("«¿Dónde está la torre?»") == "dónde está la torre"
    assert normalize_answer("an apple and a pear") == "apple and pear"


def test_squad_hand_computed():
    predictions = [
        {"id": "q1", "prediction_text": "The Eiffel Tower"},
        {"id": "q2", "prediction_text": "in Paris France"},
    ]
    references = [
        {"id": "q1", "answers": {"text": ["Eiffel Tower", "tower"], "answer_start": [0, 7]}},
        {"id": "q2", "answers": {"text": ["Paris"], "answer_start": [3]}},
    ]
    # q1: "eiffel tower" == "eiffel tower" -> EM 1, F1 1.
    # q2: "in paris france" vs "paris": EM 0; overlap 1, precision 1/3, recall 1 -> F1 = 2*(1/3)/(4/3) = 0.5.
    result = SquadMetric().compute(predictions=predictions, references=references)
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(75.0)


def test_squad_missing_prediction_raises():
    references = [{"id": "q1", "answers": {"text": ["x"], "answer_start": [0]}}]
    with pytest.raises(ValueError, match="No prediction for question id 'q1'"):
        SquadMetric().compute(predictions=[{"id": "q2", "prediction_text": "x"}], references=references)


def test_word_tokens_keep_accents():
    assert word_tokens("Ça va, très bien!") == ["ça", "va", "très", "bien"]


def test_rouge_l_hand_computed():
    # "the cat sat on the mat" vs "the cat is on the mat": LCS = the cat on the mat = 5 tokens of 6 and 6
    # -> P = R = 5/6 -> F = 5/6.
    # "a b c d" vs "b d e": LCS = b d = 2; P = 2/4, R = 2/3 -> F = 2*(1/2)(2/3)/(1/2+2/3) = 4/7.
    result = RougeL().compute(
        predictions=["the cat sat on the mat", "a b c d"], references=["the cat is on the mat", "b d e"]
    )
    assert result["rougeL"] == pytest.approx((5 / 6 + 4 / 7) / 2)


def test_rouge_l_word_order_matters_and_empty_is_zero():
    # "c b a" vs "a b c": every LCS has length 1 -> P = R = 1/3 -> F = 1/3. An empty prediction scores 0.
    result = RougeL().compute(predictions=["c b a", ""], references=["a b c", "a"])
    assert result["rougeL"] == pytest.approx((1 / 3 + 0) / 2)


def test_rouge_l_best_of_several_references():
    # vs "x y": 0; vs "a b": LCS 2, P = 2/2, R = 2/2 -> 1.
    assert RougeL().compute(predictions=["a b"], references=[["x y", "a b"]])["rougeL"] == pytest.approx(1.0)


def test_token_f1_hand_computed():
    # "The cat sat!" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]: overlap 2, P 1, R 2/3 -> F = 0.8.
    # "Paris" vs "Berlin": 0.  Both empty after normalisation ("the" vs "!"): 1.
    result = TokenF1().compute(
        predictions=["The cat sat!", "Paris", "the"], references=["a cat sat down", "Berlin", "!"]
    )
    assert result["token_f1"] == pytest.approx((0.8 + 0 + 1) / 3)


def test_token_f1_counts_repeated_tokens_once_per_match():
    # [paris, paris, paris] vs [paris]: overlap min(3, 1) = 1, P = 1/3, R = 1 -> F = 0.5.
    assert TokenF1().compute(predictions=["Paris Paris Paris"], references=["Paris"])["token_f1"] == pytest.approx(0.5)


def test_combine_with_evaluate():
    combined = evaluate.combine([RougeL(), TokenF1()])
    result = combined.compute(predictions=["the cat"], references=["the cat"])
    assert result == {"rougeL": pytest.approx(1.0), "token_f1": pytest.approx(1.0)}
