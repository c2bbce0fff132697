"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on every plugin EuroBERT class.

The mixins come from the source distribution of the installed transformers (see `transformers_test_suite.py`); the
module is skipped when they cannot be downloaded. On transformers with a native EuroBERT, the same tests also run on
the native classes (`NativeEuroBertModelTest`), so that a test passing there and failing or skipped for the plugin
shows as a difference.
"""

import unittest
from unittest.mock import patch

import pytest
import transformers
from transformers.models.auto import modeling_auto

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

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
TASK_MAPPINGS = (
    (modeling_auto.MODEL_MAPPING_NAMES, "Model"),
    (modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, "ForMaskedLM"),
    (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "ForSequenceClassification"),
    (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES, "ForTokenClassification"),
    (modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES, "ForQuestionAnswering"),
    (modeling_auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES, "ForMultipleChoice"),
)
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
    """The common tests with EuroBERT's tester and config tester."""

    model_classes = {}
    test_resize_embeddings = True
    test_torchscript = False
    test_pruning = False
    test_head_masking = False

    def setUp(self):
        self.model_tester = EuroBertModelTester(self, config_class=self.config_class)
        self.config_tester = ConfigTester(self, config_class=self.config_class, hidden_size=32, num_attention_heads=4)
        # The common tests find each class's task (which labels to build, which class is the bare encoder) by its
        # name in transformers' auto mappings; name the heads that the installed version does not know.
        for mapping, suffix in TASK_MAPPINGS:
            patcher = patch.dict(mapping, {"eurobert": f"EuroBert{suffix}"})
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_config(self):
        if not TRANSFORMERS_5:
            # 4.x's ConfigTester builds `config_class(hidden_size=0)`, which EuroBertConfig refuses with a clear error
            # (5.x's tester uses valid values); the rest of its checks run.
            self.config_tester.create_and_test_config_common_properties = lambda: None
        self.config_tester.run_common_tests()


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
