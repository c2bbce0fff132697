"""Behaviour a transformers user expects of a first-class architecture: every RoPE type from every config era, no
length cap on packed rows, live attention switching, output capture, tied embeddings, and pooling that does not
depend on the padding side."""

import logging

import pytest
import torch
import transformers

from eurobert_hf import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForSequenceClassification,
    EuroBertModel,
)
from eurobert_hf.modeling.configuration_eurobert import ROPE_SCALING_IS_ALIAS
from tests.eurobert_fixtures import VOCAB_SIZE, native_eurobert, padded_batch, tiny_config, tiny_config_kwargs

TOLERANCE = 1e-5
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5

# One settings dict per RoPE type transformers defines for encoders (tiny config: head_dim 16, 64 positions).
ROPE_SETTINGS = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64},
    "llama3": {
        "rope_type": "llama3",
        "factor": 2.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    },
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0] * 8,
        "long_factor": [2.0] * 8,
        "original_max_position_embeddings": 32,
    },
}


def rope_config(settings: dict, era: str, **overrides) -> EuroBertConfig:
    """`settings` written the way a config of `era` stores them."""
    if era == "v5":
        return tiny_config("head_dim", rope_parameters={**settings, "rope_theta": 10000.0}, **overrides)
    legacy = {("type" if key == "rope_type" else key): value for key, value in settings.items()}
    scaling = None if settings["rope_type"] == "default" else legacy if era == "hub_legacy" else settings
    if era == "both":
        return tiny_config(
            "head_dim",
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            rope_scaling=scaling,
            **overrides,
        )
    return tiny_config("head_dim", rope_theta=10000.0, rope_scaling=scaling, **overrides)


def native_rope_reference(settings: dict, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin from transformers' native EuroBERT rotary embedding for the same settings."""
    native = native_eurobert()
    config = native.EuroBertConfig(
        **tiny_config_kwargs("head_dim"), rope_parameters={**settings, "rope_theta": 10000.0}
    )
    rotary = native.modeling_eurobert.EuroBertRotaryEmbedding(config)
    x = torch.zeros(1, seq_len, 32)
    return rotary(x, torch.arange(seq_len)[None])


@pytest.mark.parametrize("era", ["v5", "hub", "hub_legacy", "both"])
@pytest.mark.parametrize("rope_type", list(ROPE_SETTINGS))
def test_every_rope_type_from_every_config_era_runs_beyond_max_positions(rope_type, era):
    config = rope_config(ROPE_SETTINGS[rope_type], era)
    assert config.rope_parameters["rope_type"] == rope_type, "a configured scaling is never dropped"
    torch.manual_seed(0)
    model = EuroBertModel(config).eval()
    assert model.rotary_emb.rope_type == rope_type
    long_ids = torch.randint(3, VOCAB_SIZE, (1, 80))  # longer than max_position_embeddings (64)
    with torch.no_grad():
        hidden = model(long_ids).last_hidden_state
    assert hidden.shape == (1, 80, 32) and torch.isfinite(hidden).all()


@pytest.mark.parametrize("rope_type", list(ROPE_SETTINGS))
def test_rope_frequencies_match_native(rope_type):
    """Short and long inputs (dynamic and longrope switch frequencies past their original length)."""
    settings = ROPE_SETTINGS[rope_type]
    model = EuroBertModel(rope_config(settings, "v5")).eval()
    for seq_len in (16, 80):
        cos, sin = model.rotary_emb(torch.zeros(1, seq_len, 32), torch.arange(seq_len)[None])
        native_cos, native_sin = native_rope_reference(settings, seq_len)
        torch.testing.assert_close(cos, native_cos, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(sin, native_sin, atol=TOLERANCE, rtol=0)


def test_rope_scaling_set_on_the_config_after_construction_applies():
    """transformers' own tests (and users) edit the config before building the model."""
    config = tiny_config("head_dim")
    if ROPE_SCALING_IS_ALIAS:
        config.rope_parameters = {"type": "linear", "factor": 4.0, "rope_theta": config.rope_theta}
    else:
        config.rope_scaling = {"type": "linear", "factor": 4.0}
    plain = EuroBertModel(tiny_config("head_dim")).rotary_emb.inv_freq
    torch.testing.assert_close(EuroBertModel(config).rotary_emb.inv_freq, plain / 4.0)


def _features(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": [1] + torch.randint(3, VOCAB_SIZE, (n - 1,), generator=generator).tolist()} for n in lengths]


def test_packed_row_longer_than_max_positions_from_data_collator_with_flattening():
    """Each sequence fits the 64 positions; the packed row (120 tokens) does not, and must not need to."""
    from transformers import DataCollatorWithFlattening

    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config()).eval()
    features = _features([40, 33, 47])
    batch = DataCollatorWithFlattening()(features)
    assert batch["input_ids"].shape[1] > model.config.max_position_embeddings
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = torch.cat([model(torch.tensor([f["input_ids"]])).logits[0] for f in features])
    assert (packed - alone).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_row_longer_than_max_positions_from_cu_seq_lens(attn):
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation=attn)).eval()
    features = _features([60, 50])
    packed_ids = torch.tensor([features[0]["input_ids"] + features[1]["input_ids"]])
    cu_seq_lens = torch.tensor([0, 60, 110], dtype=torch.int32)
    positions = torch.cat([torch.arange(60), torch.arange(50)])[None]
    with torch.no_grad():
        packed = model(packed_ids, position_ids=positions, cu_seq_lens_q=cu_seq_lens, max_length_q=60)
        alone = torch.cat([model(torch.tensor([f["input_ids"]])).last_hidden_state[0] for f in features])
    assert (packed.last_hidden_state[0] - alone).abs().max().item() <= TOLERANCE


def test_set_attn_implementation_switches_the_running_model():
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch()
    calls = []

    def counting_eager(module, query, key, value, attention_mask, **kwargs):
        calls.append(query.shape)
        from eurobert_hf.modeling.modeling_eurobert import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    with torch.no_grad():
        sdpa = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        with pytest.MonkeyPatch.context() as patcher:
            import eurobert_hf.modeling.modeling_eurobert as modeling

            patcher.setitem(
                modeling.PACKED_ATTENTION_FUNCTIONS, "eager", modeling._per_sequence_attention(counting_eager)
            )
            eager = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert len(calls) == model.config.num_hidden_layers * input_ids.shape[0], "eager runs once per sequence per layer"
    torch.testing.assert_close(eager, sdpa, atol=TOLERANCE, rtol=0)


def test_output_attentions_under_sdpa_warns_like_native(caplog):
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch()
    transformers.utils.logging.warning_once.cache_clear()  # the warning is given once per process
    with caplog.at_level(logging.WARNING), torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_attentions=True)
    assert "output_attentions" in caplog.text
    assert not out.attentions, "sdpa computes no attention maps (set attn_implementation='eager' for them)"


def test_output_hidden_states_keep_the_padded_layout():
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        plain = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert all(state.shape == (*input_ids.shape, 32) for state in out.hidden_states)
    keep = attention_mask.bool()
    torch.testing.assert_close(out.hidden_states[-1][keep], plain[keep], atol=TOLERANCE, rtol=0)
    assert isinstance(model(input_ids, return_dict=False), tuple)


def test_tie_word_embeddings_ties_the_masked_lm_head(tmp_path):
    tied = EuroBertForMaskedLM(tiny_config(tie_word_embeddings=True))
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    untied = EuroBertForMaskedLM(tiny_config())
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    tied.save_pretrained(tmp_path)
    reloaded = EuroBertForMaskedLM.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(reloaded.lm_head.weight, tied.lm_head.weight)


@pytest.mark.skipif(not TRANSFORMERS_5, reason="native EuroBERT needs transformers >= 5.3")
def test_parallel_plans_equal_native():
    native = native_eurobert()
    assert EuroBertConfig.base_model_tp_plan == native.EuroBertConfig.base_model_tp_plan
    assert EuroBertConfig.base_model_pp_plan == native.EuroBertConfig.base_model_pp_plan
    assert EuroBertForMaskedLM._tp_plan == native.EuroBertForMaskedLM._tp_plan
    assert EuroBertForMaskedLM._pp_plan == native.EuroBertForMaskedLM._pp_plan
    assert EuroBertForMaskedLM._tied_weights_keys == native.EuroBertForMaskedLM._tied_weights_keys


def _left_pad(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shifts = [input_ids.shape[1] - int(n) for n in attention_mask.sum(-1)]
    return (
        torch.stack([row.roll(shift) for row, shift in zip(input_ids, shifts)]),
        torch.stack([row.roll(shift) for row, shift in zip(attention_mask, shifts)]),
    )


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
def test_pooling_gives_the_same_logits_alone_right_and_left_padded(pooling, attn):
    torch.manual_seed(0)
    model = EuroBertForSequenceClassification(
        tiny_config(classifier_pooling=pooling, num_labels=3, attn_implementation=attn)
    ).eval()
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2, 7))
    left_ids, left_mask = _left_pad(input_ids, attention_mask)
    assert left_mask[:, 0].tolist() == [1, 0, 0, 0], "rows 1-3 start with padding"
    with torch.no_grad():
        alone = torch.cat(
            [model(input_ids[i : i + 1, :n]).logits for i, n in enumerate(attention_mask.sum(-1).tolist())]
        )
        right = model(input_ids, attention_mask=attention_mask).logits
        left = model(left_ids, attention_mask=left_mask).logits
    assert (right - alone).abs().max().item() <= TOLERANCE
    assert (left - alone).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
def test_multiple_choice_pooling_ignores_the_padding_side(pooling):
    torch.manual_seed(0)
    model = EuroBertForMultipleChoice(tiny_config(classifier_pooling=pooling)).eval()
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2, 7))
    left_ids, left_mask = _left_pad(input_ids, attention_mask)
    with torch.no_grad():
        right = model(input_ids.view(2, 2, -1), attention_mask=attention_mask.view(2, 2, -1)).logits
        left = model(left_ids.view(2, 2, -1), attention_mask=left_mask.view(2, 2, -1)).logits
    assert (right - left).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("head", [EuroBertForMaskedLM, EuroBertForSequenceClassification, EuroBertForMultipleChoice])
def test_config_return_dict_false_gives_tuples_from_every_head(head):
    torch.manual_seed(0)
    model = head(tiny_config(return_dict=False)).eval()
    input_ids, attention_mask = padded_batch()
    if head is EuroBertForMultipleChoice:
        input_ids, attention_mask = input_ids.view(2, 2, -1), attention_mask.view(2, 2, -1)
    with torch.no_grad():
        as_tuple = model(input_ids, attention_mask=attention_mask)
        as_output = model(input_ids, attention_mask=attention_mask, return_dict=True)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.logits)
