"""Initialise a student from a subset of its teacher's layers (the DistilGPT2/DistilBERT recipe).

GPT-2 -> smaller GPT-2 is a plain copy of the chosen blocks. BERT -> DistilBERT needs a
weight map, and BERT adds ``token_type_embeddings[0]`` to every token while DistilBERT has
no token types; we fold that row into the position embeddings (not into the word
embeddings, which are tied to the output layer), so the freshly initialised DistilBERT
computes exactly what a BERT holding the same layers computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)

from circuitdiff.lab.errors import LabError

DISTILBERT_LAYER_NORM_EPS = 1e-12
"""DistilBERT hard-codes this epsilon; a teacher with another one cannot be copied exactly."""


def default_layers(n_teacher_layers: int) -> list[int]:
    """Every other layer from the first: [0, 2, 4] of 6, as DistilBERT did."""
    return list(range(0, n_teacher_layers, 2))


def check_layers(layers: Sequence[int], n_teacher_layers: int) -> list[int]:
    """Validate a layer selection: non-empty, strictly increasing, within the teacher."""
    chosen = [int(i) for i in layers]
    if not chosen:
        raise LabError("the student needs at least one teacher layer")
    if any(i < 0 or i >= n_teacher_layers for i in chosen):
        raise LabError(f"student layers {chosen} out of range for a {n_teacher_layers}-layer teacher")
    if any(b <= a for a, b in zip(chosen, chosen[1:])):
        raise LabError(f"student layers must be strictly increasing, got {chosen}")
    return chosen


@torch.no_grad()
def gpt2_student(teacher: GPT2LMHeadModel, layers: Sequence[int]) -> GPT2LMHeadModel:
    """A GPT-2 with ``len(layers)`` blocks copied from ``teacher`` (embeddings and ln_f too)."""
    chosen = check_layers(layers, teacher.config.n_layer)
    cfg = GPT2Config.from_dict({**teacher.config.to_dict(), "n_layer": len(chosen)})
    student = GPT2LMHeadModel(cfg)
    src, dst = teacher.transformer, student.transformer
    dst.wte.load_state_dict(src.wte.state_dict())
    dst.wpe.load_state_dict(src.wpe.state_dict())
    dst.ln_f.load_state_dict(src.ln_f.state_dict())
    for j, i in enumerate(chosen):
        dst.h[j].load_state_dict(src.h[i].state_dict())
    student.tie_weights()
    return student


def _distilbert_config(teacher: BertForMaskedLM, n_layers: int) -> DistilBertConfig:
    """DistilBERT hyper-parameters equal to the teacher's (BERT names -> DistilBERT names)."""
    t = teacher.config
    if abs(t.layer_norm_eps - DISTILBERT_LAYER_NORM_EPS) > 1e-15:
        raise LabError(f"BERT teacher layer_norm_eps={t.layer_norm_eps}; DistilBERT needs {DISTILBERT_LAYER_NORM_EPS}")
    if getattr(t, "position_embedding_type", "absolute") != "absolute":
        raise LabError("DistilBERT students need a BERT teacher with absolute position embeddings")
    return DistilBertConfig(
        vocab_size=t.vocab_size,
        max_position_embeddings=t.max_position_embeddings,
        n_layers=n_layers,
        n_heads=t.num_attention_heads,
        dim=t.hidden_size,
        hidden_dim=t.intermediate_size,
        dropout=t.hidden_dropout_prob,
        attention_dropout=t.attention_probs_dropout_prob,
        activation=t.hidden_act,
        pad_token_id=t.pad_token_id,
        tie_word_embeddings=True,
    )


@torch.no_grad()
def distilbert_student(teacher: BertForMaskedLM, layers: Sequence[int]) -> DistilBertForMaskedLM:
    """A DistilBERT whose blocks, embeddings and MLM head are mapped from ``teacher``."""
    chosen = check_layers(layers, teacher.config.num_hidden_layers)
    student = DistilBertForMaskedLM(_distilbert_config(teacher, len(chosen)))
    t_emb, s_emb = teacher.bert.embeddings, student.distilbert.embeddings
    s_emb.word_embeddings.weight.copy_(t_emb.word_embeddings.weight)
    s_emb.position_embeddings.weight.copy_(t_emb.position_embeddings.weight + t_emb.token_type_embeddings.weight[0])
    s_emb.LayerNorm.load_state_dict(t_emb.LayerNorm.state_dict())
    for j, i in enumerate(chosen):
        t_layer, s_layer = teacher.bert.encoder.layer[i], student.distilbert.transformer.layer[j]
        pairs = [
            (t_layer.attention.self.query, s_layer.attention.q_lin),
            (t_layer.attention.self.key, s_layer.attention.k_lin),
            (t_layer.attention.self.value, s_layer.attention.v_lin),
            (t_layer.attention.output.dense, s_layer.attention.out_lin),
            (t_layer.attention.output.LayerNorm, s_layer.sa_layer_norm),
            (t_layer.intermediate.dense, s_layer.ffn.lin1),
            (t_layer.output.dense, s_layer.ffn.lin2),
            (t_layer.output.LayerNorm, s_layer.output_layer_norm),
        ]
        for src, dst in pairs:
            dst.load_state_dict(src.state_dict())
    head = teacher.cls.predictions
    student.vocab_transform.load_state_dict(head.transform.dense.state_dict())
    student.vocab_layer_norm.load_state_dict(head.transform.LayerNorm.state_dict())
    student.vocab_projector.bias.copy_(head.bias)
    student.tie_weights()
    return student


def init_student(teacher: PreTrainedModel, layers: Sequence[int] | None = None) -> PreTrainedModel:
    """Student for ``teacher`` from ``layers`` (default every other layer), in train mode."""
    if isinstance(teacher, GPT2LMHeadModel):
        n = teacher.config.n_layer
        student: PreTrainedModel = gpt2_student(teacher, default_layers(n) if layers is None else layers)
    elif isinstance(teacher, BertForMaskedLM):
        n = teacher.config.num_hidden_layers
        student = distilbert_student(teacher, default_layers(n) if layers is None else layers)
    else:
        raise LabError(f"no student recipe for a {type(teacher).__name__} teacher (GPT-2 or BERT only)")
    student.train()
    return student


@torch.no_grad()
def bert_with_layers(teacher: BertForMaskedLM, layers: Sequence[int]) -> BertForMaskedLM:
    """A BERT holding only ``layers`` of ``teacher``: the ground truth a DistilBERT init must match."""
    chosen = check_layers(layers, teacher.config.num_hidden_layers)
    cfg = type(teacher.config).from_dict({**teacher.config.to_dict(), "num_hidden_layers": len(chosen)})
    pruned = BertForMaskedLM(cfg)
    state = teacher.state_dict()
    renamed = {}
    for key, value in state.items():
        if key.startswith("bert.encoder.layer."):
            idx, rest = key[len("bert.encoder.layer."):].split(".", 1)
            if int(idx) in chosen:
                renamed[f"bert.encoder.layer.{chosen.index(int(idx))}.{rest}"] = value
        else:
            renamed[key] = value
    pruned.load_state_dict(renamed, strict=False)
    pruned.tie_weights()
    return pruned
