"""Loading, saving, Auto-class registration and configuration handling."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import eurobert_hf
from eurobert_hf import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
)
from tests.eurobert_fixtures import padded_batch, tiny_config, tiny_config_kwargs

AUTO_CLASSES = {
    AutoModel: EuroBertModel,
    AutoModelForMaskedLM: EuroBertForMaskedLM,
    AutoModelForSequenceClassification: EuroBertForSequenceClassification,
    AutoModelForTokenClassification: EuroBertForTokenClassification,
    AutoModelForQuestionAnswering: EuroBertForQuestionAnswering,
    AutoModelForMultipleChoice: EuroBertForMultipleChoice,
}


def first_output(model, input_ids, attention_mask) -> torch.Tensor:
    if isinstance(model, EuroBertForMultipleChoice):
        input_ids, attention_mask = input_ids[None], attention_mask[None]
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask)[0]


@pytest.mark.parametrize("auto_class", list(AUTO_CLASSES), ids=lambda c: c.__name__)
def test_save_load_roundtrip_through_auto_classes(tmp_path, auto_class):
    model_class = AUTO_CLASSES[auto_class]
    torch.manual_seed(0)
    model = model_class(tiny_config("head_dim", num_labels=3, classifier_pooling="mean")).eval()
    model.save_pretrained(tmp_path)
    loaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is model_class
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.classifier_pooling == "mean" and loaded.config.head_dim == 16
    input_ids, attention_mask = padded_batch()
    torch.testing.assert_close(
        first_output(loaded.eval(), input_ids, attention_mask), first_output(model, input_ids, attention_mask)
    )


def test_auto_config_resolves_to_the_plugin():
    assert type(AutoConfig.for_model("eurobert")) is EuroBertConfig
    assert type(AutoModel.from_config(tiny_config())) is EuroBertModel


def test_hub_era_checkpoint_loads_without_remote_code_and_pools_with_bos(tmp_path):
    """A config.json as the Hub's EuroBERT fine-tunes store it (clf_pooling, rope_theta, auto_map to remote code)."""
    kwargs = tiny_config_kwargs("gqa")
    hub_config = {
        "architectures": ["EuroBertForSequenceClassification"],
        "auto_map": {
            "AutoConfig": "EuroBERT/EuroBERT-210m--configuration_eurobert.EuroBertConfig",
            "AutoModelForSequenceClassification": "EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertForSequenceClassification",
        },
        "model_type": "eurobert",
        "clf_pooling": "bos",
        "rope_theta": 250000,
        "rope_scaling": None,
        "is_decoder": False,
        "hidden_dropout": 0.0,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "transformers_version": "4.40.0.dev0",
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
        **kwargs,
    }
    (tmp_path / "config.json").write_text(json.dumps(hub_config))
    torch.manual_seed(0)
    reference = EuroBertForSequenceClassification(EuroBertConfig(**kwargs, classifier_pooling="bos", num_labels=2))
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "model.safetensors"))

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(model) is EuroBertForSequenceClassification
    assert model.config.classifier_pooling == "bos"
    assert model.config.rope_parameters == {"rope_type": "default", "rope_theta": 250000.0}
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
        hidden = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
        expected = model.classifier(model.activation(model.dense(hidden[:, 0])))
    torch.testing.assert_close(logits, expected)


def test_importing_twice_changes_nothing():
    before = AutoModelForSequenceClassification.from_config(tiny_config()).__class__
    import importlib

    importlib.reload(eurobert_hf.registration)
    eurobert_hf.registration.register_auto_classes()
    eurobert_hf.registration.register_peft_defaults()
    assert AutoModelForSequenceClassification.from_config(tiny_config()).__class__ is before


def test_prefer_native_switch_keeps_transformers_classes():
    pytest.importorskip("transformers.models.eurobert", reason="native EuroBERT needs transformers >= 5.3")
    code = "import eurobert_hf, transformers;print(type(transformers.AutoConfig.for_model('eurobert')).__module__)"
    env = {"EUROBERT_HF_PREFER_NATIVE": "1", "PATH": "", "PYTHONPATH": str(__import__("pathlib").Path.cwd())}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip().startswith("transformers.models.eurobert")


def test_rope_settings_from_every_era():
    assert EuroBertConfig().rope_parameters == {"rope_type": "default", "rope_theta": 250000.0}
    assert EuroBertConfig(rope_theta=10000).rope_parameters["rope_theta"] == 10000.0
    v5 = EuroBertConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0})
    assert v5.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}
    hub = EuroBertConfig(rope_theta=250000, rope_scaling={"type": "yarn", "factor": 4.0})
    assert hub.rope_parameters["rope_type"] == "yarn" and hub.rope_parameters["factor"] == 4.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"classifier_pooling": "max"}, "classifier_pooling must be one of"),
        ({"clf_pooling": "cls"}, "classifier_pooling must be one of"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "multiple of num_attention_heads"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3, "hidden_size": 32}, "multiple of num_key_value_heads"),
        ({"rope_parameters": {"rope_type": "ntk-by-parts", "factor": 2.0}}, "rope_type"),
        ({"hidden_size": 0}, "positive integer"),
        ({"attention_dropout": 1.5}, "attention_dropout"),
    ],
)
def test_bad_config_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EuroBertConfig(**kwargs)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m, ids, mask: m(), "exactly one of `input_ids` and `inputs_embeds`"),
        (lambda m, ids, mask: m(ids, attention_mask=mask[:, :-1]), "attention_mask must have shape"),
        (lambda m, ids, mask: m(ids, attention_mask=mask[:, :, None]), "attention_mask must have shape"),
        (lambda m, ids, mask: m(ids, attention_mask=torch.zeros_like(mask)), "no token to attend to"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch()
    with pytest.raises(ValueError, match=message):
        call(model, input_ids, attention_mask)


def test_multiple_choice_rejects_flat_inputs():
    model = EuroBertForMultipleChoice(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    with pytest.raises(ValueError, match="num_choices"):
        model(input_ids, attention_mask=attention_mask)
