"""The three distillation losses, as in the Hugging Face DistilBERT/DistilGPT2 distiller."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_target_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, select: Tensor) -> Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over the selected positions.

    ``select`` is a (batch, seq) bool mask (real tokens, or masked tokens for MLM). The
    T^2 factor keeps gradient sizes comparable across temperatures (Hinton et al. 2015).
    """
    s = student_logits[select] / temperature
    t = teacher_logits[select] / temperature
    if s.numel() == 0:
        return student_logits.sum() * 0.0
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean", log_target=True)
    return kl * temperature**2


def hidden_cosine(student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean (1 - cosine) between student and teacher last hidden states at real tokens."""
    keep = attention_mask.bool()
    s, t = student_hidden[keep], teacher_hidden[keep]
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


def lm_loss(logits: Tensor, labels: Tensor, causal: bool, weights: Tensor | None = None) -> Tensor:
    """Cross-entropy on labels (-100 ignored), shifted by one for causal models.

    ``weights`` (same shape as ``labels``) turns it into a weighted mean, e.g. to count a
    task prompt's answer token more than the template words around it.
    """
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
        weights = None if weights is None else weights[:, 1:]
    flat = labels.reshape(-1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="none")
    w = (flat != -100).float() if weights is None else weights.reshape(-1).float() * (flat != -100).float()
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def answer_weights(batch: dict[str, Tensor], answer_weight: float) -> Tensor | None:
    """Per-token LM loss weights: ``answer_weight`` at task answers, 1 elsewhere (None if all 1)."""
    if answer_weight == 1.0 or "answer_mask" not in batch:
        return None
    return 1.0 + (answer_weight - 1.0) * batch["answer_mask"].float()


def kl_select(batch: dict[str, Tensor], causal: bool, masked_only: bool) -> Tensor:
    """Positions that get soft targets: every real token, or (MLM) only the masked ones."""
    if not causal and masked_only:
        return batch["labels"] != -100
    return batch["attention_mask"].bool()


def distillation_loss(
    student_out: object, teacher_out: object, batch: dict[str, Tensor], *, causal: bool,
    alpha_kl: float, alpha_lm: float, alpha_cos: float, temperature: float, kl_on_masked_only: bool = True,
    answer_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum and its parts; outputs must carry ``logits`` and ``hidden_states``."""
    parts: dict[str, Tensor] = {}
    s_logits: Tensor = student_out.logits  # type: ignore[attr-defined]
    t_logits: Tensor = teacher_out.logits  # type: ignore[attr-defined]
    if alpha_kl:
        parts["kl"] = soft_target_kl(s_logits, t_logits, temperature, kl_select(batch, causal, kl_on_masked_only))
    if alpha_lm:
        parts["lm"] = lm_loss(s_logits, batch["labels"], causal, answer_weights(batch, answer_weight))
    if alpha_cos:
        parts["cos"] = hidden_cosine(
            student_out.hidden_states[-1], teacher_out.hidden_states[-1], batch["attention_mask"]  # type: ignore[attr-defined]
        )
    weights = {"kl": alpha_kl, "lm": alpha_lm, "cos": alpha_cos}
    total = sum(weights[k] * v for k, v in parts.items())
    assert isinstance(total, Tensor)
    return total, {k: float(v.detach()) for k, v in parts.items()}

