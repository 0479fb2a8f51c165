"""CKA with Gaussian kernels (bandwidth 0.8 x median distance): also sees non-linear agreement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from circuitdiff.analysis._arrays import Float64Array
from circuitdiff.analysis.measures import register
from circuitdiff.analysis.measures.linear_cka import LinearCKA, gram_feature


@register
@dataclass(frozen=True)
class RbfCKA(LinearCKA):
    name: ClassVar[str] = "rbf_cka"
    description: ClassVar[str] = __doc__.splitlines()[0]
    prompt_weights: ClassVar[bool] = False
    """Its Gaussian Gram depends on the bandwidth of the drawn prompts: resamples are recomputed."""
    sigma_frac: float = 0.8

    def prepare(self, x: Float64Array) -> Float64Array:
        return gram_feature(x, True, self.debiased, self.sigma_frac)
