"""Teacher cache: run the teacher once, then the ULD loss on the cache equals the loss with the live teacher."""

import pytest
import torch

from eurobert_hf.trainers.cache_integrity import parse_settings
from eurobert_hf.trainers.teacher_cache import (
    TeacherCacheCollator,
    TeacherCacheRequirements,
    cache_teacher_probs,
    check_teacher_cache,
    collate_teacher_cache,
    has_teacher_cache,
    teacher_probs_from_batch,
)
from eurobert_hf.trainers.uld_alignment import offsets_uld_loss, pad_alignment_groups
from eurobert_hf.trainers.uld_losses import uld_loss
from tests.teacher_cache_fixtures import STUDENT_VOCAB, TEACHER_VOCAB, cache_dataset, pad, tiny_llama


def _live_teacher_logits(model, rows):
    input_ids = pad(rows["teacher_input_ids"], 0)
    mask = pad([[1] * len(r) for r in rows["teacher_input_ids"]], 0)
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask).logits


@pytest.fixture(scope="module")
def teacher():
    return tiny_llama(TEACHER_VOCAB)


@pytest.fixture(scope="module")
def dataset():
    return cache_dataset()


def _student_batch(rows, seed=2):
    labels = pad(rows["labels"], -100)
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(labels.shape[0], labels.shape[1], STUDENT_VOCAB, generator=generator) * 3
    return logits, labels


def test_cache_columns(teacher, dataset):
    cached = cache_teacher_probs(teacher, dataset, top_k=5, batch_size=2)
    assert has_teacher_cache(cached) and not has_teacher_cache(dataset)
    assert set(dataset.column_names) < set(cached.column_names)
    for row in cached:
        answer_tokens = sum(label != -100 for label in row["teacher_labels"][1:])
        assert len(row["teacher_topk_probs"]) == len(row["teacher_remaining_mass"]) == answer_tokens
        for values, remaining in zip(row["teacher_topk_probs"], row["teacher_remaining_mass"]):
            assert len(values) == 5 and values == sorted(values, reverse=True)
            assert sum(values) + remaining == pytest.approx(1.0, abs=1e-5) and remaining > 1e-4
        settings = parse_settings(row["teacher_cache_settings"])
        assert (settings["format"], settings["top_k"], settings["temperature"], settings["vocab_size"]) == (
            "exact",
            5,
            1.0,
            TEACHER_VOCAB,
        )
        assert row["teacher_cache_num_tokens"] == answer_tokens
    # The teacher's first answer token is predicted at the last prompt position: check one value by hand.
    logits = _live_teacher_logits(teacher, dataset[:1])[0]
    first = dataset[0]["teacher_labels"].index(next(x for x in dataset[0]["teacher_labels"] if x != -100))
    expected = logits[first - 1].softmax(-1).sort(descending=True).values[:5]
    torch.testing.assert_close(torch.tensor(cached[0]["teacher_topk_probs"][0]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_complete_cache_gives_the_live_teacher_loss(teacher, dataset, temperature):
    cached = cache_teacher_probs(teacher, dataset, top_k=64, teacher_temperature=temperature, batch_size=3)
    assert parse_settings(cached[0]["teacher_cache_settings"])["top_k"] == TEACHER_VOCAB  # k >= vocabulary: complete
    rows = dataset[:]
    teacher_logits = _live_teacher_logits(teacher, rows)
    teacher_labels = pad(rows["teacher_labels"], -100)
    student_logits, labels = _student_batch(rows)
    batch = collate_teacher_cache(list(cached))
    for top_k in (None, 4):
        for skip in (False, True):
            kwargs = {
                "teacher_temperature": temperature,
                "top_k": top_k,
                "skip_student_eos": skip,
                "skip_teacher_eos": skip,
            }
            live = uld_loss(student_logits, teacher_logits, labels, teacher_labels, **kwargs)
            from_cache = uld_loss(student_logits, teacher_probs_from_batch(batch), labels, None, **kwargs)
            assert abs(live.item() - from_cache.item()) <= 1e-6
            assert live.item() > 0.1


def test_cache_with_offsets_alignment(teacher, dataset):
    cached = cache_teacher_probs(teacher, dataset, top_k=6, batch_size=5)
    rows = dataset[:]
    student_logits, labels = _student_batch(rows, seed=3)
    student_groups = pad_alignment_groups(
        [list(range(n)) for n in ((labels[:, 1:] != -100).sum(1) // 2).tolist()], length=labels.shape[1]
    )
    teacher_counts = [len(r) for r in cached["teacher_topk_probs"]]
    teacher_groups = pad_alignment_groups([[i // 2 for i in range(n)] for n in teacher_counts])
    args = (student_groups, teacher_groups)
    live = offsets_uld_loss(
        student_logits,
        _live_teacher_logits(teacher, rows),
        labels,
        pad(rows["teacher_labels"], -100),
        *args,
        top_k=6,
    )
    from_cache = offsets_uld_loss(
        student_logits, teacher_probs_from_batch(collate_teacher_cache(list(cached))), labels, None, *args, top_k=6
    )
    assert abs(live.item() - from_cache.item()) <= 1e-6 and live.item() > 0


def test_collator_wraps_the_uld_collator(teacher, dataset):
    cached = cache_teacher_probs(teacher, dataset, top_k=3)

    def base(examples):
        return {"labels": pad([e["labels"] for e in examples], -100)}

    batch = TeacherCacheCollator(base)(list(cached)[:2])
    assert batch["teacher_topk_probs"].shape == (2, max(len(r) for r in cached[:2]["teacher_topk_probs"]), 3)
    assert batch["teacher_num_tokens"].tolist() == [len(r) for r in cached[:2]["teacher_remaining_mass"]]
    assert "labels" in batch


def test_settings_mismatch_raises(teacher, dataset):
    truncated = cache_teacher_probs(teacher, dataset, top_k=4, teacher_temperature=2.0)
    check_teacher_cache(truncated, TeacherCacheRequirements(top_k=4, teacher_temperature=2.0))
    check_teacher_cache(truncated, TeacherCacheRequirements(top_k=2, teacher_temperature=2.0))
    with pytest.raises(ValueError, match="teacher_temperature"):
        check_teacher_cache(truncated, TeacherCacheRequirements(top_k=4, teacher_temperature=1.0))
    with pytest.raises(ValueError, match="top 4 of 37"):
        check_teacher_cache(truncated, TeacherCacheRequirements(top_k=8, teacher_temperature=2.0))
    with pytest.raises(ValueError, match="whole vocabulary"):
        check_teacher_cache(truncated, TeacherCacheRequirements(top_k=None, teacher_temperature=2.0))
    complete = cache_teacher_probs(teacher, dataset, top_k=None)
    check_teacher_cache(complete, TeacherCacheRequirements(top_k=None))
    check_teacher_cache(complete, TeacherCacheRequirements(top_k=1000))
    with pytest.raises(ValueError, match="no complete teacher cache"):
        check_teacher_cache(dataset, TeacherCacheRequirements())


def test_bad_inputs(teacher, dataset):
    with pytest.raises(ValueError, match="teacher_input_ids"):
        cache_teacher_probs(teacher, dataset.remove_columns("teacher_input_ids"), top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        cache_teacher_probs(teacher, dataset, top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        cache_teacher_probs(teacher, dataset, top_k=3, teacher_temperature=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        cache_teacher_probs(teacher, dataset, top_k=3, batch_size=0)
    with pytest.raises(ValueError, match="map-style"):
        cache_teacher_probs(teacher, dataset.to_iterable_dataset(), top_k=3)
    with pytest.raises(ValueError, match="format"):
        cache_teacher_probs(teacher, dataset, format="zip")
    with pytest.raises(ValueError, match="tail_knots"):
        cache_teacher_probs(teacher, dataset, format="compact", tail_knots=1)
    teacher.train()
    cache_teacher_probs(teacher, dataset.select([0]), top_k=3)
    assert teacher.training
    teacher.eval()
