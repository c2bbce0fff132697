"""`ULDConfig` refuses loss weights and temperatures that would train on NaN or on zero gradients."""

import math

import pytest
import torch

from eurobert_hf.trainers.uld_config import MIN_TEMPERATURE
from tests.test_uld_trainer import make_config


@pytest.mark.parametrize("name", ["uld_crossentropy_weight", "uld_distillation_weight"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.5])
def test_loss_weights_must_be_finite_and_non_negative(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        make_config(tmp_path, **{name: value})


@pytest.mark.parametrize("name", ["uld_student_temperature", "uld_teacher_temperature"])
@pytest.mark.parametrize("value", [1e-45, 1e-30, 1e-3, math.nan, math.inf])
def test_temperatures_must_be_finite_and_not_underflow(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        make_config(tmp_path, **{name: value})


def test_lowest_accepted_temperature_keeps_finite_gradients(tmp_path):
    make_config(tmp_path, uld_student_temperature=MIN_TEMPERATURE, uld_teacher_temperature=MIN_TEMPERATURE)
    logits = (torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 30).requires_grad_()
    torch.softmax(logits / MIN_TEMPERATURE, dim=-1).sort(dim=-1).values[:, -1].sum().backward()
    assert torch.isfinite(logits.grad).all()
    # The case: 1e-45 makes the tempered logits infinite and the gradient NaN.
    tiny = logits.detach().clone().requires_grad_()
    torch.softmax(tiny / torch.tensor(1e-45), dim=-1).sort(dim=-1).values[:, -1].sum().backward()
    assert not torch.isfinite(tiny.grad).all()
