"""The readmission transformer: every feature becomes a token, a [CLS] token reads them all.

Tokens (all of width `hidden_size`):
- numeric feature j: value * w_j + b_j, plus a learned "missing" vector m_j where the value is missing
  (the encoder sets missing values to 0, so a missing value is exactly b_j + m_j, never "0 as a value");
  features listed together in `config.numeric_token_groups` (the Charlson flags) sum into one token;
- categorical feature k: a row of feature k's own embedding table (one shared table, offset per feature);
- diagnosis position p: embedding(full code) + embedding(3-character category) + embedding(ICD chapter)
  + a position embedding, so a rare code still carries what its category and chapter know;
- one learned [CLS] token in front.
The sequence goes through pre-LayerNorm transformer encoder layers; the final [CLS] state is classified
into 2 logits. The loss (class-weighted cross-entropy, weight `pos_weight` on the positive class) is
computed inside `forward` when `labels` are given.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from models.configuration_readmit import ReadmitTransformerConfig


class ReadmitFeatureTokenizer(nn.Module):
    """Encoded features -> token sequence [batch, 1 + n_features, hidden]."""

    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__()
        hidden = config.hidden_size
        n_numeric = len(config.numeric_feature_names)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.numeric_weight = nn.Parameter(torch.zeros(n_numeric, hidden))
        self.numeric_bias = nn.Parameter(torch.zeros(n_numeric, hidden))
        self.numeric_missing = nn.Parameter(torch.zeros(n_numeric, hidden))
        cardinalities = config.categorical_cardinalities
        self.register_buffer("categorical_offsets", self.offsets(cardinalities), persistent=False)
        # Numeric features that share a token (config.numeric_token_groups) are summed into it.
        self.n_numeric_tokens = config.n_numeric_tokens
        self.grouped = self.n_numeric_tokens != n_numeric
        self.register_buffer("numeric_assignment", self.assignment_matrix(config), persistent=False)
        self.categorical_embeddings = nn.Embedding(max(1, sum(cardinalities)), hidden)
        code_vocab, category_vocab, chapter_vocab = config.code_vocab_sizes
        self.code_embeddings = nn.Embedding(code_vocab, hidden, padding_idx=0)
        self.category_embeddings = nn.Embedding(category_vocab, hidden, padding_idx=0)
        self.chapter_embeddings = nn.Embedding(chapter_vocab, hidden, padding_idx=0)
        self.code_position_embeddings = nn.Parameter(torch.zeros(max(1, config.n_code_positions), hidden))
        self.n_code_positions = config.n_code_positions

    @staticmethod
    def assignment_matrix(config: ReadmitTransformerConfig) -> torch.Tensor:
        """[n_numeric_tokens, n_numeric] 0/1: which features feed which numeric token."""
        assignment = config.numeric_token_assignment()
        matrix = torch.zeros(config.n_numeric_tokens, len(assignment))
        for feature, token in enumerate(assignment):
            matrix[token, feature] = 1.0
        return matrix

    @staticmethod
    def offsets(cardinalities) -> torch.Tensor:
        """Start row of each categorical feature in the shared embedding table."""
        if not cardinalities:
            return torch.zeros(0, dtype=torch.long)
        return torch.tensor([0] + list(cardinalities[:-1]), dtype=torch.long).cumsum(0)

    def forward(self, numeric_values: torch.Tensor, numeric_missing: torch.Tensor,
                categorical_ids: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
        batch = numeric_values.shape[0]
        tokens = [self.cls_token.expand(batch, -1, -1)]
        if self.numeric_weight.shape[0]:
            missing = numeric_missing.to(self.numeric_weight.dtype).unsqueeze(-1)
            numeric = (numeric_values.to(self.numeric_weight.dtype).unsqueeze(-1) * self.numeric_weight
                       + self.numeric_bias + missing * self.numeric_missing)
            if self.grouped:
                numeric = torch.einsum("tf,bfh->bth", self.numeric_assignment.to(numeric.dtype), numeric)
            tokens.append(numeric)
        if self.categorical_offsets.numel():
            tokens.append(self.categorical_embeddings(categorical_ids + self.categorical_offsets))
        if self.n_code_positions:
            tokens.append(self.code_embeddings(code_ids[..., 0]) + self.category_embeddings(code_ids[..., 1])
                          + self.chapter_embeddings(code_ids[..., 2]) + self.code_position_embeddings)
        return torch.cat(tokens, dim=1)


class ReadmitSelfAttention(nn.Module):
    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, hidden: torch.Tensor, n_queries: Optional[int] = None) -> torch.Tensor:
        """Self-attention; with `n_queries`, only the first `n_queries` tokens attend (and are returned)."""
        batch, length, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query = qkv[0] if n_queries is None else qkv[0][:, :, :n_queries]
        attended = F.scaled_dot_product_attention(query, qkv[1], qkv[2],
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        return self.output(attended.transpose(1, 2).reshape(batch, query.shape[2], width))


class ReadmitLayer(nn.Module):
    """Pre-LN encoder layer: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__()
        self.attention_LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ReadmitSelfAttention(config)
        self.ffn_LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """With `cls_only`, only the [CLS] position is updated and returned ([batch, 1, hidden]): the last
        layer's other outputs are never read, so skipping them gives the same logits at a fraction of the cost."""
        n_queries = 1 if cls_only else None
        attended = self.attention(self.attention_LayerNorm(hidden), n_queries)
        hidden = (hidden[:, :1] if cls_only else hidden) + self.dropout(attended)
        ffn = self.ffn_output(self.dropout(F.gelu(self.intermediate(self.ffn_LayerNorm(hidden)))))
        return hidden + self.dropout(ffn)


class ReadmitPreTrainedModel(PreTrainedModel):
    config_class = ReadmitTransformerConfig
    config: ReadmitTransformerConfig
    base_model_prefix = "readmit"
    main_input_name = "numeric_values"
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, ReadmitFeatureTokenizer):
            for parameter in (module.cls_token, module.numeric_weight, module.numeric_missing,
                              module.code_position_embeddings):
                init.normal_(parameter, mean=0.0, std=std)
            init.zeros_(module.numeric_bias)
            # A non-persistent buffer is not in the checkpoint: from_pretrained rebuilds it here.
            init.copy_(module.categorical_offsets, module.offsets(self.config.categorical_cardinalities))
            init.copy_(module.numeric_assignment, module.assignment_matrix(self.config))


class ReadmitTransformerForSequenceClassification(ReadmitPreTrainedModel):
    """Feature tokens -> pre-LN transformer encoder -> [CLS] -> 2 logits (not readmitted, readmitted)."""

    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = ReadmitFeatureTokenizer(config)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(ReadmitLayer(config) for _ in range(config.num_hidden_layers))
        self.final_LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, numeric_values: torch.Tensor, numeric_missing: torch.Tensor,
                categorical_ids: torch.Tensor, code_ids: torch.Tensor,
                labels: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None):
        r"""
        numeric_values (`torch.FloatTensor` [batch, n_numeric]): standardized values, 0 where missing.
        numeric_missing (`torch.BoolTensor` [batch, n_numeric]): True where the value is missing.
        categorical_ids (`torch.LongTensor` [batch, n_categorical]): per-feature level indices.
        code_ids (`torch.LongTensor` [batch, n_code_positions, 3]): (code, category, chapter) ids, 0 = pad.
        labels (`torch.LongTensor` [batch], optional): 1 = readmitted within 30 days; adds the loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self.embedding_dropout(self.embeddings(numeric_values, numeric_missing, categorical_ids, code_ids))
        all_hidden = [hidden] if output_hidden_states else None
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            # The last layer only needs the [CLS] position unless all hidden states were asked for.
            hidden = layer(hidden, cls_only=index == last and not output_hidden_states)
            if all_hidden is not None:
                all_hidden.append(hidden)
        pooled = self.final_LayerNorm(hidden[:, 0])
        logits = self.classifier(self.classifier_dropout(pooled))
        loss = None
        if labels is not None:
            weight = torch.tensor([1.0, self.config.pos_weight], dtype=logits.dtype, device=logits.device)
            loss = F.cross_entropy(logits, labels.view(-1).long(), weight=weight)
        if not return_dict:
            output = (logits,) + ((tuple(all_hidden),) if all_hidden is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=tuple(all_hidden) if all_hidden is not None else None)
