"""Smoke tests of the issue-14 experiment models (benchmarks/model_experiments.py) with a tiny config
(hidden 32, 2 layers): shapes, history masking, the masked-feature pretraining loss, the distillation
teacher's history index (only earlier encounters), and a save/load round trip. Behaviour, not accuracy."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

from models.configuration_readmit import ReadmitTransformerConfig  # noqa: E402
from models.data import to_tensors  # noqa: E402
from models.modeling_readmit import ReadmitTransformerForSequenceClassification  # noqa: E402
from tests import test_model as model_tests  # noqa: E402

SPEC = importlib.util.spec_from_file_location(
    "model_experiments", Path(__file__).resolve().parent.parent / "benchmarks" / "model_experiments.py")
experiments = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(experiments)

K = 3  # earlier encounters per history
random_batch = model_tests.random_batch


def tiny_config(**overrides) -> ReadmitTransformerConfig:
    """tests/test_model.py's tiny config, with a history of K earlier encounters and one numeric token group."""
    return model_tests.tiny_config(**{"numeric_token_groups": {"g": ["x3", "x4"]}, "history_length": K, **overrides})


def tiny_frame() -> pd.DataFrame:
    """Two patients: p1 with encounters 10, 30, 20 (out of order), p2 with one."""
    frame = pd.DataFrame({"patient_id": ["p1", "p1", "p1", "p2"], "encounter_id": ["10", "20", "30", "15"],
                          "readmitted_30d": [True, False, None, False]})
    frame["_id"] = frame["encounter_id"].astype(float)
    return frame.sort_values(["patient_id", "_id"]).reset_index(drop=True)


def test_history_index_uses_only_earlier_encounters():
    prev, gap, label = experiments.history_index(tiny_frame(), K)
    assert prev.tolist() == [[-1, -1, -1], [0, -1, -1], [1, 0, -1], [-1, -1, -1]]
    assert gap[2, 0] == pytest.approx(np.log1p(10)) and gap[2, 1] == pytest.approx(np.log1p(20))
    assert label[1, 0] == 2 and label[2].tolist() == [1, 2, 0] and label[0].tolist() == [0, 0, 0]


@pytest.fixture()
def history_model():
    torch.manual_seed(0)
    return experiments.ReadmitHistoryTransformer(tiny_config()).eval()


def history_inputs(n: int = 6):
    batch = random_batch(n)
    prev = np.array([[-1, -1, -1], [0, -1, -1], [1, 0, -1], [-1, -1, -1], [3, -1, -1], [4, 3, -1]])[:n]
    gap = np.where(prev >= 0, 1.0, 0.0).astype(np.float32)
    label = np.where(prev >= 0, 1, 0)
    rows = np.arange(n)
    return batch, {**to_tensors(batch), **experiments.history_inputs(batch, prev, gap, label, rows)}


def test_history_model_shapes_loss_and_empty_slots(history_model):
    batch, inputs = history_inputs()
    out = history_model(**inputs, labels=torch.tensor([0, 1, 0, 1, 0, 1]))
    assert out.logits.shape == (6, 2) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    # rows without any earlier encounter: same logits with or without (empty) history arguments
    no_history = history_model(**to_tensors(batch)).logits
    first_stays = [0, 3]
    assert torch.allclose(out.logits[first_stays], no_history[first_stays], atol=1e-6)
    assert not torch.allclose(out.logits[[1, 2]], no_history[[1, 2]], atol=1e-6)


def test_history_model_save_load_round_trip(history_model, tmp_path):
    _, inputs = history_inputs()
    history_model.save_pretrained(tmp_path)
    config = ReadmitTransformerConfig.from_pretrained(tmp_path)
    assert config.history_length == K and config.num_hidden_layers == 2
    loaded = experiments.ReadmitHistoryTransformer.from_pretrained(tmp_path).eval()
    assert torch.allclose(history_model(**inputs).logits, loaded(**inputs).logits, atol=1e-6)
    assert "classifier.weight" in dict(loaded.named_parameters())


def test_masked_feature_pretraining_loss_trains_the_product_model():
    torch.manual_seed(0)
    model = ReadmitTransformerForSequenceClassification(tiny_config())
    head = experiments.MaskedFeatureHead(model.config)
    inputs = to_tensors(random_batch(64))
    loss = head.loss(model, **inputs, mask_rate=0.3, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.embeddings.categorical_embeddings.weight.grad is not None
    assert model.classifier.weight.grad is None  # pretraining never touches the classifier


def test_fit_runs_an_epoch_with_distillation():
    torch.manual_seed(0)
    model = ReadmitTransformerForSequenceClassification(tiny_config())
    batch = random_batch(200)
    y = (np.arange(200) % 5 == 0).astype(np.int64)
    inputs = lambda rows: to_tensors(batch.take(rows))  # noqa: E731
    result = experiments.fit(model, inputs, y, inputs, y, epochs=1, seed=0, log=lambda m: None,
                             soft_targets=np.full(200, 0.2), alpha=0.5, batch_size=64)
    assert len(result["epochs"]) == 1 and 0.0 <= result["best_validation_auroc"] <= 1.0


def test_history_detail_tokens_of_the_nearest_earlier_encounter(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(history_detail_features=["x0", "x4", "b", "dx_1"])
    model = experiments.ReadmitHistoryTransformer(config).eval()
    assert model.detail_positions == [1, 4, 4 + 2, 4 + 3 + 1]  # x0; group g (x3, x4); categorical b; dx_1
    batch, inputs = history_inputs()
    out = model(**inputs).logits
    assert out.shape == (6, 2)
    assert torch.allclose(out[[0, 3]], model(**to_tensors(batch)).logits[[0, 3]], atol=1e-6)
    model.save_pretrained(tmp_path)
    loaded = experiments.ReadmitHistoryTransformer.from_pretrained(tmp_path).eval()
    assert loaded.detail_positions == model.detail_positions
    assert torch.allclose(out, loaded(**inputs).logits, atol=1e-6)
