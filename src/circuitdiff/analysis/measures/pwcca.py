"""Canonical correlations weighted by the neuron variance they explain: needs n well above d."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from circuitdiff.analysis._arrays import Float64Array
from circuitdiff.analysis.cca import pwcca_from_bases
from circuitdiff.analysis.measures import register
from circuitdiff.analysis.measures.svcca import SVCCA, Prepared


@register
@dataclass(frozen=True)
class PWCCA(SVCCA):
    name: ClassVar[str] = "pwcca"
    description: ClassVar[str] = __doc__.splitlines()[0]
    keep_variance: float = 1.0

    def _block(self, teacher: Sequence[Prepared], student: Sequence[Prepared], kt: np.ndarray, ks: np.ndarray,
               n: int) -> Float64Array:
        sim = np.zeros((len(teacher), len(student)))
        for i, (qx, xc) in enumerate(teacher):
            if kt[i] == 0:
                continue
            for j, (qy, yc) in enumerate(student):
                if ks[j] > 0:
                    sim[i, j] = pwcca_from_bases(qx, qy, xc, yc)
        return sim
