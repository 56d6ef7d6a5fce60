"""Unit tests of the readmission transformer with a tiny config (hidden 32, 2 layers): shapes, loss,
save/load round trip, Auto-class registration, config validation, calibration monotonicity.
They check behaviour, not accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

torch.set_num_threads(1)

from core.encoding import EncodedBatch  # noqa: E402
from core.metrics import ece as expected_calibration_error  # noqa: E402
from models.calibration import Calibrator, choose_calibrator, sigmoid  # noqa: E402
from models.configuration_readmit import ReadmitTransformerConfig  # noqa: E402
from models.data import EncodedDataset, collate, to_tensors  # noqa: E402
from models.modeling_readmit import ReadmitTransformerForSequenceClassification  # noqa: E402

N_NUMERIC, CARDINALITIES, CODE_VOCAB = 5, [4, 7, 3], [20, 12, 6]


def tiny_config(**overrides) -> ReadmitTransformerConfig:
    values = dict(numeric_feature_names=[f"x{i}" for i in range(N_NUMERIC)],
                  categorical_feature_names=["a", "b", "c"], categorical_cardinalities=CARDINALITIES,
                  code_vocab_sizes=CODE_VOCAB, n_code_positions=3, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, pos_weight=2.5)
    values.update(overrides)
    return ReadmitTransformerConfig(**values)


def random_batch(n: int, seed: int = 0) -> EncodedBatch:
    rng = np.random.default_rng(seed)
    missing = rng.random((n, N_NUMERIC)) < 0.2
    numeric = np.where(missing, 0.0, rng.normal(size=(n, N_NUMERIC))).astype(np.float32)
    categorical = np.stack([rng.integers(0, c, n) for c in CARDINALITIES], axis=1).astype(np.int64)
    codes = np.stack([rng.integers(0, v, (n, 3)) for v in CODE_VOCAB], axis=2).astype(np.int64)
    codes[rng.random(n) < 0.3, 2, :] = 0  # some encounters without a third diagnosis
    return EncodedBatch(numeric, missing, categorical, codes)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return ReadmitTransformerForSequenceClassification(tiny_config()).eval()


def test_forward_shapes_and_no_loss_without_labels(model):
    out = model(**to_tensors(random_batch(7)))
    assert out.logits.shape == (7, 2)
    assert out.loss is None
    hidden = model(**to_tensors(random_batch(7)), output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[0].shape == (7, model.config.n_tokens, 32)


def test_loss_with_labels_is_class_weighted_cross_entropy(model):
    labels = np.array([0, 1, 1, 0, 0, 1])
    out = model(**to_tensors(random_batch(6), labels))
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor(labels),
                                                 weight=torch.tensor([1.0, 2.5]))
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert model.classifier.weight.grad is not None


def test_tuple_output_when_return_dict_false(model):
    loss, logits = model(**to_tensors(random_batch(4), np.array([0, 1, 0, 1])), return_dict=False)
    assert logits.shape == (4, 2) and loss.ndim == 0


def test_cls_shortcut_in_last_layer_gives_same_logits(model):
    tensors = to_tensors(random_batch(9))
    with torch.no_grad():
        fast = model(**tensors).logits
        full = model(**tensors, output_hidden_states=True).logits
    assert torch.allclose(fast, full, atol=1e-6)


def test_missing_numeric_value_uses_missing_embedding(model):
    batch = random_batch(2)
    batch.numeric[:] = 0.0
    batch.numeric_missing[0, :] = True
    batch.numeric_missing[1, :] = False
    batch.categorical[1] = batch.categorical[0]
    batch.codes[1] = batch.codes[0]
    with torch.no_grad():
        logits = model(**to_tensors(batch)).logits
    assert not torch.allclose(logits[0], logits[1])  # "missing" differs from a value of 0


def test_save_load_round_trip_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "readmit-transformer"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ReadmitTransformerForSequenceClassification)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ReadmitTransformerConfig)
    tensors = to_tensors(random_batch(11, seed=3))
    with torch.no_grad():
        assert torch.equal(model(**tensors).logits, loaded(**tensors).logits)
    assert loaded.config.categorical_cardinalities == CARDINALITIES


def test_padding_code_embeddings_are_zero(model):
    for table in (model.embeddings.code_embeddings, model.embeddings.category_embeddings,
                  model.embeddings.chapter_embeddings):
        assert torch.count_nonzero(table.weight[0]) == 0


@pytest.mark.parametrize("overrides, message", [
    ({"hidden_size": 30, "num_attention_heads": 4}, "multiple"),
    ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
    ({"pos_weight": 0}, "pos_weight"),
    ({"categorical_cardinalities": [4, 7]}, "cardinalities"),
    ({"code_vocab_sizes": [20, 12]}, "code_vocab_sizes"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
])
def test_config_refuses_invalid_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_dataset_fetches_whole_batches():
    batch = random_batch(10)
    labels = np.arange(10) % 2
    dataset = EncodedDataset(batch, labels)
    items = dataset.__getitems__([3, 1, 4])
    assert collate(items) is items
    assert items["numeric_values"].shape == (3, N_NUMERIC) and items["labels"].tolist() == [1, 1, 0]
    stacked = collate([dataset[0], dataset[1]])
    assert stacked["code_ids"].shape == (2, 3, 3)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_is_monotone_and_json_round_trips(method, tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(size=3000)
    y = (rng.random(3000) < sigmoid(1.5 * z - 2)).astype(float)
    raw = sigmoid(z + 1)  # over-confident, shifted raw probability
    calibrator = Calibrator.fit(method, raw, y)
    grid = np.linspace(0.0, 1.0, 501)
    calibrated = calibrator(grid)
    assert np.all(np.diff(calibrated) >= -1e-12)
    assert np.all((calibrated >= 0) & (calibrated <= 1))
    calibrator.save(tmp_path)
    restored = Calibrator.load(tmp_path)
    assert np.allclose(restored(grid), calibrated)


def test_choose_calibrator_measures_on_held_out_patients():
    rng = np.random.default_rng(2)
    z = rng.normal(size=4000)
    y = (rng.random(4000) < sigmoid(z - 2)).astype(float)
    raw = sigmoid(z)  # prior shifted as with a class-weighted loss
    calibrator, selection = choose_calibrator(raw, y, groups=np.arange(4000) // 3, seed=0)
    assert selection["chosen"] == calibrator.method
    assert set(selection["candidates"]) == {"identity", "temperature", "platt", "isotonic"}
    best = selection["candidates"][calibrator.method]["held_out_log_loss"]
    assert best <= min(v["held_out_log_loss"] for v in selection["candidates"].values())
    assert expected_calibration_error(y, calibrator(raw)) < expected_calibration_error(y, raw)


def test_ece_matches_definition():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.8])
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.25)


def test_numeric_token_groups_share_one_token_and_round_trip(tmp_path):
    config = tiny_config(numeric_token_groups={"flags": ["x3", "x4"]})
    assert config.numeric_token_assignment() == [0, 1, 2, 3, 3]
    assert config.n_tokens == 1 + 4 + 3 + 3
    torch.manual_seed(0)
    model = ReadmitTransformerForSequenceClassification(config).eval()
    tensors = to_tensors(random_batch(6))
    hidden = model(**tensors, output_hidden_states=True).hidden_states[0]
    assert hidden.shape == (6, config.n_tokens, 32)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**tensors).logits, loaded(**tensors).logits)
    with pytest.raises(ValueError, match="unknown numeric"):
        tiny_config(numeric_token_groups={"flags": ["nope"]})
