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

Which norm a module is, is decided by what it computes, not by its class name: ``norm_spec``
runs it on a fixed probe and compares with LayerNorm, RMSNorm with weight ``w`` and RMSNorm with
``1 + w`` (Gemma), using the module's own parameters and epsilon. A norm that is none of them
(or hides its parameters) takes the generic path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

@dataclass(frozen=True)
class NormSpec:
    """What a norm module computes: ``layer`` (LayerNorm) or ``rms`` (RMSNorm), with the weight it
    effectively multiplies by (Gemma's ``1 + weight`` already added), its bias and epsilon."""

    kind: str
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


_PROBE_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}
"""float64: transformers' RMSNorms compute in float32 whatever the input."""


def norm_spec(norm: nn.Module) -> NormSpec | None:
    """Classify ``norm`` by behaviour: the first candidate formula that reproduces its output on a
    fixed probe (relative error below float rounding of its dtype), else None."""
    weight = getattr(norm, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() != 1:
        return None
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if not isinstance(eps, float) or any(True for _ in norm.children()):
        return None
    size = weight.shape[0] if isinstance(weight, torch.Tensor) else getattr(norm, "normalized_shape", (None,))[0]
    if not isinstance(size, int):
        return None
    bias = getattr(norm, "bias", None)
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    w = weight.detach() if isinstance(weight, torch.Tensor) else None
    dtype = w.dtype if w is not None else torch.float32
    x = torch.randn(4, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x * 3 + 0.5).to(dtype=dtype, device=w.device if w is not None else "cpu")
    with torch.no_grad():
        got = norm.forward(x).double()
    candidates = [NormSpec("layer", w, bias, eps), NormSpec("rms", w, None, eps)]
    if w is not None and bias is None:
        candidates.append(NormSpec("rms", 1 + w.double(), None, eps))
    tol = _PROBE_TOLERANCE.get(dtype, 2e-2)
    for spec in candidates:
        if spec.kind == "rms" and bias is not None:
            continue
        want = _apply_spec(spec, x.double())
        if bool(((got - want).abs() <= tol * (1 + want.abs())).all()):
            return spec
    return None


def _apply_spec(spec: NormSpec, x: torch.Tensor) -> torch.Tensor:
    x_hat, _ = _normalised_with(spec, x.unsqueeze(0))
    out = x_hat.view_as(x)
    if spec.weight is not None:
        out = out * spec.weight.to(out)
    return out if spec.bias is None else out + spec.bias.to(out)


def norm_kind(norm: nn.Module) -> str | None:
    """``layer`` or ``rms`` where the closed form is known to be this module's VJP, else None."""
    spec = norm_spec(norm)
    return None if spec is None else spec.kind


def fold_weight(norm: nn.Module, heads: torch.Tensor) -> torch.Tensor:
    """``W*`` from the heads' projection weights (n, d_head, d_model): the norm's weight folded
    in, centred over d_model for LayerNorm (that is the mean-subtraction term)."""
    heads = heads.to(torch.promote_types(heads.dtype, torch.float32))  # half-precision models: fold in float32
    spec = norm_spec(norm)
    assert spec is not None, "fold_weight needs a LayerNorm or RMSNorm (norm_kind)"
    folded = heads * spec.weight.to(heads) if spec.weight is not None else heads.clone()
    if spec.kind == "layer":
        folded = folded - folded.mean(-1, keepdim=True)
    return folded


def _normalised(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂, r) per position in float32 or wider, x (b, s, d) -> (b*s, d), (b*s, 1)."""
    spec = norm_spec(norm)
    assert spec is not None
    return _normalised_with(spec, x)


def _normalised_with(spec: NormSpec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().flatten(0, 1)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if spec.kind == "layer":
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        r = torch.rsqrt(var + spec.eps)
        return (x - mean) * r, r
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + spec.eps)
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
    spec = norm_spec(norm)
    norm_bias = spec.bias if spec is not None and spec.kind == "layer" else None
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
