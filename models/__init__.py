"""The readmission model package; importing it registers the model with the transformers Auto classes.

    import models
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained("models/champion")
"""
from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.utils import logging as transformers_logging

from models.configuration_readmit import ReadmitTransformerConfig
from models.modeling_readmit import ReadmitTransformerForSequenceClassification

# Loading a 300 KB model needs no progress bar on every command's stderr.
transformers_logging.disable_progress_bar()

AutoConfig.register(ReadmitTransformerConfig.model_type, ReadmitTransformerConfig, exist_ok=True)
AutoModelForSequenceClassification.register(ReadmitTransformerConfig, ReadmitTransformerForSequenceClassification,
                                            exist_ok=True)

__all__ = ["ReadmitTransformerConfig", "ReadmitTransformerForSequenceClassification"]
