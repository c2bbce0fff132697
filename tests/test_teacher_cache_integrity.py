"""A teacher cache that does not belong to the training run is refused, with a message that names the mismatch."""

import pytest
from datasets import concatenate_datasets

from eurobert_hf.trainers.cache_integrity import tokenizer_fingerprint
from eurobert_hf.trainers.teacher_cache import (
    CACHE_COLUMNS,
    TeacherCacheCollator,
    TeacherCacheRequirements,
    cache_teacher_probs,
    check_teacher_cache,
    collate_teacher_cache,
)
from tests.teacher_cache_fixtures import TEACHER_VOCAB, cache_dataset, tiny_llama
from tests.tokenizer_assets import gpt2_tokenizer, mistral_tokenizer

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def teacher():
    return tiny_llama(TEACHER_VOCAB)


@pytest.fixture(scope="module")
def dataset():
    return cache_dataset()


def _build(teacher, dataset, **kwargs):
    settings = {"top_k": 5, "processing_class": gpt2_tokenizer(), "max_length": MAX_LENGTH}
    settings |= {"teacher_name_or_path": "tiny-teacher", "teacher_revision": "0123abc"} | kwargs
    return cache_teacher_probs(teacher, dataset, **settings)


@pytest.fixture(scope="module", params=["exact", "compact"])
def cached(request, teacher, dataset):
    return _build(teacher, dataset, format=request.param, head_size=4, tail_knots=4)


def _requirements(**kwargs):
    settings = {
        "top_k": 5,
        "max_length": MAX_LENGTH,
        "student_tokenizer": tokenizer_fingerprint(gpt2_tokenizer()),
    } | kwargs
    return TeacherCacheRequirements(**settings)


def _cache_columns(dataset):
    return [column for column in dataset.column_names if column in CACHE_COLUMNS]


def test_a_matching_cache_passes_even_shuffled(cached):
    for candidate in (cached, cached.shuffle(seed=3)):
        check_teacher_cache(candidate, _requirements())
        batch = collate_teacher_cache(list(candidate), _requirements())
        assert batch["teacher_num_tokens"].tolist() == candidate["teacher_cache_num_tokens"]


def test_rows_reordered(cached, dataset):
    # The cached columns attached to the rows of another order (e.g. cached on a shuffled copy of the data).
    order = [2, 0, 1, 4, 3]
    reordered = concatenate_datasets([dataset.select(order), cached.select_columns(_cache_columns(cached))], axis=1)
    with pytest.raises(ValueError, match="Row 0 .*attached to other rows \\(reordered or filtered\\)"):
        check_teacher_cache(reordered, _requirements())
    with pytest.raises(ValueError, match="Row 0 .*attached to other rows \\(reordered or filtered\\)"):
        collate_teacher_cache(list(reordered))
    # Same lengths, other ids: the hashes tell.
    swapped = concatenate_datasets(
        [
            cache_dataset(seed=5).select_columns(["input_ids", "labels"]),
            cached.remove_columns(["input_ids", "labels"]),
        ],
        axis=1,
    )
    with pytest.raises(ValueError, match="its student token ids and labels are not those the cache was built from"):
        collate_teacher_cache(list(swapped))


def test_values_scaled(cached):
    value_column = "teacher_topk_probs" if "teacher_topk_probs" in cached.column_names else "teacher_head_probs"
    for factor in (2.0, 0.5):

        def scale(row, factor=factor):
            return {value_column: [[v * factor for v in token] for token in row[value_column]]}

        scaled = cached.map(scale)
        with pytest.raises(ValueError, match="sum to .* instead of 1: the values were modified"):
            collate_teacher_cache(list(scaled), _requirements())


def test_another_student_tokenizer(cached):
    other = tokenizer_fingerprint(mistral_tokenizer())
    with pytest.raises(ValueError, match="another student tokenizer"):
        check_teacher_cache(cached, _requirements(student_tokenizer=other))
    with pytest.raises(ValueError, match="another student tokenizer"):
        collate_teacher_cache(list(cached), _requirements(student_tokenizer=other))


def test_another_max_length(cached):
    for max_length in (128, None):
        with pytest.raises(ValueError, match=f"max_length={MAX_LENGTH}, but training uses max_length={max_length}"):
            check_teacher_cache(cached, _requirements(max_length=max_length))


def test_another_temperature_or_top_k(cached):
    with pytest.raises(ValueError, match="teacher_temperature=1.0, but training uses uld_teacher_temperature=2.0"):
        check_teacher_cache(cached, _requirements(teacher_temperature=2.0))
    if "teacher_topk_probs" in cached.column_names:
        with pytest.raises(ValueError, match="keeps the top 5 of 37 .* uld_top_k=8"):
            check_teacher_cache(cached, _requirements(top_k=8))
    else:  # the compact format models the whole vocabulary
        check_teacher_cache(cached, _requirements(top_k=None))


def test_another_teacher(cached):
    with pytest.raises(ValueError, match="built from the teacher"):
        check_teacher_cache(cached, _requirements(teacher="google/gemma-3-270m"))
    check_teacher_cache(cached, _requirements(teacher="tiny-teacher"))


def test_stream_whose_later_rows_have_other_settings(teacher, dataset):
    first = _build(teacher, dataset.select(range(3)))
    later = _build(teacher, dataset.select(range(3, 5)), teacher_temperature=2.0)
    stream = concatenate_datasets([first, later]).to_iterable_dataset()
    # The first row fits: the settings check at the start cannot see the later rows ...
    check_teacher_cache(stream, _requirements())
    collator = TeacherCacheCollator(lambda examples: {}, _requirements())
    rows = list(stream)
    collator(rows[:3])
    # ... but the collator checks every row it batches.
    with pytest.raises(ValueError, match="uld_teacher_temperature"):
        collator(rows[3:])
    # A map-style dataset mixing settings is refused as a whole.
    with pytest.raises(ValueError, match="different settings"):
        check_teacher_cache(concatenate_datasets([first, later]), _requirements())


def test_unrecorded_settings_are_not_compared(teacher, dataset):
    # A cache built without tokenizers or max_length cannot be checked for them, but rows are still checked.
    bare = cache_teacher_probs(teacher, dataset, top_k=5)
    check_teacher_cache(bare, _requirements(max_length=7, student_tokenizer="0" * 16))
    with pytest.raises(ValueError, match="attached to other rows"):
        check_teacher_cache(
            concatenate_datasets([dataset.select([1, 0, 2, 3, 4]), bare.select_columns(_cache_columns(bare))], axis=1),
            _requirements(),
        )


def test_the_trainer_refuses_a_cache_of_another_run(tmp_path):
    from eurobert_hf.trainers import ULDConfig, ULDTrainer
    from eurobert_hf.trainers.uld_data import prepare_uld_dataset
    from tests.uld_fixtures import prompt_completion_dataset, student_tokenizer, tiny_student

    # Student and teacher both read GPT-2's tokenizer here: a cheap teacher vocabulary (top 5 kept).
    prepared = prepare_uld_dataset(
        prompt_completion_dataset(2), student_tokenizer(), student_tokenizer(), max_length=32
    )
    cached = cache_teacher_probs(
        tiny_student(seed=1), prepared, top_k=5, processing_class=student_tokenizer(), max_length=32
    )

    def trainer(max_length=32, tokenizer=None):
        args = ULDConfig(str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_length=max_length, uld_top_k=5)
        return ULDTrainer(
            model=tiny_student(), args=args, train_dataset=cached, processing_class=tokenizer or student_tokenizer()
        )

    fitting = trainer()
    batch = fitting.data_collator(list(fitting.train_dataset))
    assert batch["teacher_num_tokens"].tolist() == cached["teacher_cache_num_tokens"]
    with pytest.raises(ValueError, match="max_length=32, but training uses max_length=64"):
        trainer(max_length=64)
    with pytest.raises(ValueError, match="another student tokenizer"):
        trainer(tokenizer=mistral_tokenizer())
