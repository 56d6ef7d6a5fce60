"""`n_members` (a seed ensemble inside one model): mean of member logits, both loss modes, save/load,
backward compatibility of n_members=1 folders, and that explanations still find one token tensor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import models  # noqa: E402,F401  (registers the Auto classes)
from models.configuration_readmit import ReadmitTransformerConfig  # noqa: E402
from models.data import to_tensors  # noqa: E402
from models.modeling_readmit import ReadmitTransformerForSequenceClassification  # noqa: E402
from test_model import random_batch, tiny_config  # noqa: E402


def ensemble(n: int = 3, **overrides):
    torch.manual_seed(0)
    return ReadmitTransformerForSequenceClassification(tiny_config(n_members=n, **overrides)).eval()


def test_logits_are_the_mean_of_independent_members():
    model = ensemble(3, num_hidden_layers=1)
    inputs = to_tensors(random_batch(9))
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.embeddings(inputs["numeric_values"], inputs["numeric_missing"], inputs["categorical_ids"],
                                  inputs["code_ids"])
        width = model.config.hidden_size
        members = [m(tokens[..., i * width:(i + 1) * width]) for i, m in enumerate(model.members)]
    assert tokens.shape[-1] == 3 * width
    torch.testing.assert_close(logits, torch.stack(members).mean(0))
    assert not torch.allclose(members[0], members[1])  # independently initialised


@pytest.mark.parametrize("member_loss", ["mean_member", "mean_logit"])
def test_loss_modes(member_loss):
    model = ensemble(2, member_loss=member_loss)
    batch, labels = random_batch(8), np.array([0, 1, 0, 1, 1, 0, 0, 0])
    out = model(**to_tensors(batch, labels))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(m.classifier.weight.grad is not None for m in model.members)


def test_round_trip_and_single_member_keeps_parameter_names(tmp_path):
    from transformers import AutoModelForSequenceClassification
    model = ensemble(3)
    model.save_pretrained(tmp_path / "ens")
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ens").eval()
    inputs = to_tensors(random_batch(5))
    torch.testing.assert_close(back(**inputs).logits, model(**inputs).logits)
    single = ReadmitTransformerForSequenceClassification(tiny_config())
    assert single.config.n_members == 1 and "classifier.weight" in single.state_dict()
    assert not any(k.startswith("members.") for k in single.state_dict())
    config = tiny_config().to_dict()
    config.pop("n_members"), config.pop("member_loss")  # a config.json written before n_members existed
    assert ReadmitTransformerConfig.from_dict(config).n_members == 1
    with pytest.raises(ValueError, match="member_loss"):
        tiny_config(n_members=2, member_loss="vote")
    with pytest.raises(ValueError, match="n_members"):
        tiny_config(n_members=0)


def test_explanations_hook_the_shared_token_tensor(diabetes_csv):
    from core.encoding import encode
    from core.explain import FIELD_GROUPS, TokenExplainer, build_background
    from models.calibration import Calibrator
    from core.features import CATEGORICAL_NAMES, NUMERIC_NAMES, build_features
    from core.sources import diabetes130
    from test_scoring_helpers import fit_preprocessing, read_diabetes
    features = build_features(diabetes130.to_canonical(read_diabetes(diabetes_csv, 1500)))
    prep = fit_preprocessing(features)
    torch.manual_seed(0)
    config = ReadmitTransformerConfig(numeric_feature_names=NUMERIC_NAMES, categorical_feature_names=CATEGORICAL_NAMES,
                                      categorical_cardinalities=prep.cardinalities(),
                                      code_vocab_sizes=prep.code_vocab_sizes(), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, initializer_range=0.2, n_members=3)
    model = ReadmitTransformerForSequenceClassification(config).eval()
    batch = encode(features[features["eligible"]], prep)
    explainer = TokenExplainer(model, prep, build_background(batch, k=8, seed=0),
                               Calibrator("platt", {"a": 0.8, "b": -1.2}))
    assert explainer.site.module_name == "embeddings"
    assert set(explainer.site.token_group[1:]) == set(range(len(FIELD_GROUPS)))
