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
d_model but the result. Generic autograd (``is_grads_batched``) stays the path for any
other norm; a test holds both equal to autograd through the real modules.
"""

from __future__ import annotations

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


class ClosedFormVJP:
    """One layer's norm statistics, then ``head_grads`` per projection into a given buffer."""

    def __init__(self, norm: nn.Module, x: torch.Tensor) -> None:
        self.x_hat, self.r = _normalised(norm, x)

    def head_grads(self, grad: torch.Tensor, folded: torch.Tensor, out: torch.Tensor) -> None:
        """grad (n, b*s, d_head) at the heads' columns, folded (n, d_head, d_model) -> out (n, b*s, d_model)."""
        g = grad.to(folded.dtype) * self.r.to(folded.dtype)  # r g: small, (n, b*s, d_head)
        x_hat = self.x_hat.to(folded.dtype)
        n, e, d = folded.shape
        reads = (x_hat @ folded.flatten(0, 1).T).view(-1, n, e).transpose(0, 1)  # W*^T x̂, (n, b*s, d_head)
        c = (g * reads).sum(-1, keepdim=True) / d  # (n, b*s, 1)
        torch.bmm(g, folded, out=out)
        out.addcmul_(c, x_hat, value=-1.0)
