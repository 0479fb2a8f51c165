"""Every head's q/k/v input gradient through a LayerNorm or RMSNorm in closed form, for EAP.

A head h reads ``norm(x) @ W_h``; EAP needs d(metric)/dx through that head alone, for every
head of a layer at once: ``J_norm(x)^T W_h g_h`` with g_h the gradient at the head's
projection columns. Both norms' Jacobians are a per-position scale and a rank-one
correction (x̂ = normalised x, r = 1/std or 1/rms, w = the norm's weight):

    LayerNorm:  J^T u = r * (w⊙u - mean(w⊙u) - x̂ * mean(w⊙u⊙x̂))
    RMSNorm:    J^T u = r * (w⊙u - x̂ * mean(w⊙u⊙x̂))

Folding w (and, for LayerNorm, the mean over d_model) into the head's weight once per run
gives ``W*_h``, and then  J^T W_h g_h = W*_h (r g_h) - x̂ * ((r g_h)·(W*_h^T x̂)) / d:
one batched matrix product per layer and one in-place pass, with nothing per head of size
d_model but the result; over IG steps the factors add up, so that product is made once.
Generic autograd (``is_grads_batched``) stays the path for any
other norm; a test holds both equal to autograd through the real modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")
"""Classes computing ``weight * x / rms(x)`` (in float32, as transformers writes them); Gemma's
``(1 + weight)`` variant is not among them and takes the generic path."""


def norm_kind(norm: nn.Module) -> str | None:
    """``layer`` or ``rms`` where the closed form is known to be this module's VJP, else None."""
    if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1:
        return "layer"
    if type(norm).__name__ in RMS_NORMS and isinstance(getattr(norm, "weight", None), torch.Tensor):
        return "rms"
    return None


def fold_weight(norm: nn.Module, heads: torch.Tensor) -> torch.Tensor:
    """``W*`` from the heads' projection weights (n, d_head, d_model): the norm's weight folded
    in, centred over d_model for LayerNorm (that is the mean-subtraction term)."""
    heads = heads.to(torch.promote_types(heads.dtype, torch.float32))  # half-precision models: fold in float32
    w = norm.weight.detach() if norm.weight is not None else None
    folded = heads * w.to(heads) if w is not None else heads.clone()
    if norm_kind(norm) == "layer":
        folded = folded - folded.mean(-1, keepdim=True)
    return folded


def _normalised(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂, r) per position in float32 or wider, x (b, s, d) -> (b*s, d), (b*s, 1)."""
    x = x.detach().flatten(0, 1)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if norm_kind(norm) == "layer":
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        r = torch.rsqrt(var + norm.eps)
        return (x - mean) * r, r
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * r, r


@dataclass
class HeadFactors:
    """Every head's input gradient of one layer, factored: ``W*_h (r g_h) - Σ_k c_k x̂_k``.

    ``scaled`` (per projection, (n, b*s, d_head)) and the corrections add up over IG steps
    as they are, so EAP-IG makes the one (n, b*s, d_model)-sized product per layer once,
    at the end, instead of once per step.
    """

    scaled: list[torch.Tensor]
    weights: list[torch.Tensor]
    corrections: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def add_(self, other: HeadFactors) -> HeadFactors:
        for mine, theirs in zip(self.scaled, other.scaled):
            mine.add_(theirs)
        self.corrections.extend(other.corrections)
        return self

    def materialize(self) -> torch.Tensor:
        """(all heads, b*s, d_model)."""
        n_total = sum(len(g) for g in self.scaled)
        out = torch.empty(n_total, *self.corrections[0][1].shape, dtype=self.weights[0].dtype,
                          device=self.weights[0].device)
        row = 0
        for g, w in zip(self.scaled, self.weights):
            torch.bmm(g, w, out=out[row:row + len(g)])
            row += len(g)
        for c, x_hat in self.corrections:
            out.addcmul_(c, x_hat, value=-1.0)
        return out


def projection_offset(norm: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What a head's projection adds to ``x̂ W*_h`` (n, d_head): the norm's bias through the head's
    weight (n, d_head, d_model) plus the projection's own bias (n, d_head), so that
    ``W*_h^T x̂ = projection output - offset`` (the mean term vanishes: x̂ sums to 0 in LayerNorm)."""
    offset = torch.zeros(weight.shape[:2], dtype=weight.dtype, device=weight.device)
    norm_bias = getattr(norm, "bias", None) if norm_kind(norm) == "layer" else None
    if norm_bias is not None:
        offset += weight @ norm_bias.detach().to(weight)
    if bias is not None:
        offset += bias.detach().to(weight)
    return offset


def head_factors(norm: nn.Module, x: torch.Tensor, grads: list[torch.Tensor], folded: list[torch.Tensor],
                 reads: list[torch.Tensor] | None = None) -> HeadFactors:
    """grads (n, b*s, d_head) at each projection's head columns, folded (n, d_head, d_model) from
    ``fold_weight``; x (b, s, d_model) the norm's input; ``reads`` (n, b*s, d_head) ``W*_h^T x̂``
    where known (from the projection's output and ``projection_offset``: no product needed)."""
    x_hat, r = _normalised(norm, x)
    scaled, cs = [], []
    for i, (grad, w) in enumerate(zip(grads, folded)):
        g = grad.to(w.dtype) * r.to(w.dtype)  # r g: small, (n, b*s, d_head)
        n, e, d = w.shape
        read = reads[i].to(w.dtype) if reads is not None else \
            (x_hat.to(w.dtype) @ w.flatten(0, 1).T).view(-1, n, e).transpose(0, 1)
        scaled.append(g)
        cs.append((g * read).sum(-1, keepdim=True) / d)  # (n, b*s, 1)
    return HeadFactors(scaled, folded, [(torch.cat(cs), x_hat.to(folded[0].dtype))])
