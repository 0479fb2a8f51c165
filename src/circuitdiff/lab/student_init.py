"""Initialise a student from a subset of its teacher's layers (the DistilGPT2/DistilBERT recipe).

GPT-2, Llama and the other causal families become a smaller model of their own class holding
the chosen blocks (``depth_pruned``). BERT -> DistilBERT needs a weight map, and BERT adds
``token_type_embeddings[0]`` to every token while DistilBERT has no token types; we fold that
row into the position embeddings (not into the word embeddings, which are tied to the output
layer), so the freshly initialised DistilBERT computes exactly what a BERT holding the same
layers computes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM, PreTrainedModel

from circuitdiff.errors import UnsupportedArchitectureError
from circuitdiff.lab.errors import LabError
from circuitdiff.models.adapters import adapter_class_for

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
def depth_pruned(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """The teacher's own class holding only ``layers`` of its blocks, in order; the rest is copied.

    Works for every family the adapters know (GPT-2, Llama/Mistral/Qwen, GPT-NeoX, BERT,
    DistilBERT): blocks are renumbered in the state dict, so a fresh model of the smaller
    config gets them with correct layer indices (rotary caches and KV cache slots included).
    """
    layers_path = adapter_class_for(teacher.config.model_type).layers_path
    chosen = check_layers(layers, teacher.config.num_hidden_layers)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(chosen)  # GPT-2 / DistilBERT map this name to n_layer / n_layers
    if isinstance(getattr(config, "layer_types", None), list):  # sliding-window or hybrid schedules
        config.layer_types = [config.layer_types[i] for i in chosen]
    student = type(teacher)(config)
    prefix = layers_path + "."
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in chosen:
                state[f"{prefix}{chosen.index(int(index))}.{rest}"] = value
        else:
            state[key] = value
    student.load_state_dict(state, strict=True)
    student.tie_weights()
    return student.to(next(teacher.parameters()).dtype)


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
    """Student for ``teacher`` from ``layers`` (default every other layer), in train mode.

    BERT becomes a DistilBERT (as DistilBERT was made); every other supported family is
    depth-pruned into a smaller model of its own class (DistilGPT2, Minitron-style depth pruning).
    """
    try:
        adapter_class_for(teacher.config.model_type)
    except UnsupportedArchitectureError as exc:
        raise LabError(f"no student recipe for a {type(teacher).__name__} teacher: {exc}") from None
    n = teacher.config.num_hidden_layers
    chosen = default_layers(n) if layers is None else layers
    if isinstance(teacher, BertForMaskedLM):
        student: PreTrainedModel = distilbert_student(teacher, chosen)
    else:
        student = depth_pruned(teacher, chosen)
    student.train()
    return student
