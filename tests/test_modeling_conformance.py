"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on every plugin EuroBERT class.

The mixins come from the source distribution of the installed transformers (see `transformers_test_suite.py`); the
module is skipped when they cannot be downloaded. On transformers with a native EuroBERT, the same tests also run on
the native classes (`NativeEuroBertModelTest`), so that a test passing there and failing or skipped for the plugin
shows as a difference.
"""

import copy
import unittest

import pytest
import torch

from eurobert_hf import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
)

from . import transformers_test_suite

try:
    SUITE = transformers_test_suite.load()
except Exception as error:  # no network on first use, or an sdist layout this loader does not know
    pytest.skip(f"transformers' common model tests are unavailable: {error}", allow_module_level=True)

ModelTesterMixin = SUITE.modeling.ModelTesterMixin
ConfigTester = SUITE.configuration.ConfigTester
ids_tensor = SUITE.modeling.ids_tensor
random_attention_mask = SUITE.modeling.random_attention_mask


class EuroBertModelTester:
    """Tiny EuroBERT configs and inputs, in the layout transformers' common tests expect of a model tester."""

    def __init__(
        self,
        parent,
        config_class=EuroBertConfig,
        batch_size=3,
        seq_length=7,
        is_training=True,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
        num_choices=4,
    ):
        self.parent = parent
        self.config_class = config_class
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.num_labels = num_labels
        self.num_choices = num_choices

    def get_config(self):
        return self.config_class(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            num_labels=self.num_labels,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            mask_token_id=3,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class EuroBertConformanceMixin:
    """The common tests, plus the input preparation for heads that transformers' auto mappings may not name."""

    model_classes = {}
    test_resize_embeddings = True
    test_torchscript = False
    test_pruning = False
    test_head_masking = False

    def setUp(self):
        self.model_tester = EuroBertModelTester(self, config_class=self.config_class)
        self.config_tester = ConfigTester(self, config_class=self.config_class, hidden_size=32, num_attention_heads=4)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        name = model_class.__name__
        if name.endswith("ForMultipleChoice"):
            inputs_dict = {
                key: value.unsqueeze(1).expand(-1, self.model_tester.num_choices, -1).contiguous()
                if isinstance(value, torch.Tensor) and value.ndim > 1
                else value
                for key, value in copy.deepcopy(inputs_dict).items()
            }
            if return_labels:
                inputs_dict["labels"] = torch.ones(self.model_tester.batch_size, dtype=torch.long)
            return inputs_dict
        if name.endswith("ForQuestionAnswering"):
            inputs_dict = copy.deepcopy(inputs_dict)
            if return_labels:
                inputs_dict["start_positions"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
                inputs_dict["end_positions"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
            return inputs_dict
        return super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)


class EuroBertModelTest(EuroBertConformanceMixin, ModelTesterMixin, unittest.TestCase):
    config_class = EuroBertConfig
    all_model_classes = (
        EuroBertModel,
        EuroBertForMaskedLM,
        EuroBertForSequenceClassification,
        EuroBertForTokenClassification,
        EuroBertForQuestionAnswering,
        EuroBertForMultipleChoice,
    )


def _native_classes():
    try:
        from transformers.models.eurobert import modeling_eurobert as native
    except ImportError:
        return None
    return native


_NATIVE = _native_classes()


@pytest.mark.slow
@unittest.skipIf(_NATIVE is None, "the installed transformers has no native EuroBERT")
class NativeEuroBertModelTest(EuroBertConformanceMixin, ModelTesterMixin, unittest.TestCase):
    """The reference: the same tests on transformers' native classes (run with `-m slow` to compare)."""

    config_class = _NATIVE.EuroBertConfig if _NATIVE else None
    all_model_classes = (
        tuple(
            getattr(_NATIVE, name)
            for name in (
                "EuroBertModel",
                "EuroBertForMaskedLM",
                "EuroBertForSequenceClassification",
                "EuroBertForTokenClassification",
            )
        )
        if _NATIVE
        else ()
    )
