"""Where a head attends from the read position, by token role (subject, IO, earlier numbers, ...).

Input is plain data: the head's attention row at the read position, (n, s), and per role
the position of that role's token in each prompt (-1 where the prompt has no such token).
Output: per template and role, the mean attention mass over prompts with a bootstrap
interval over those prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from circuitdiff.analysis.bootstrap import bootstrap_ci


@dataclass(frozen=True)
class TemplateRoleMass:
    """Mean attention mass one head puts on one role's token, over one template's prompts.

    The per-head part of ``schema.RoleAttention``: the record adds whose head it is and its counterpart."""

    template: str
    role: str
    mean: float
    lo: float
    hi: float
    n_prompts: int


def role_mass(attention_row: ArrayLike, positions: ArrayLike) -> np.ndarray:
    """(n,) attention weight on the role's position in each prompt; NaN where the role is absent (-1)."""
    att = np.asarray(attention_row, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.int64)
    if att.ndim != 2 or pos.shape != (att.shape[0],):
        raise ValueError(f"need attention (n, s) and positions (n,), got {att.shape} and {pos.shape}")
    if np.any(pos >= att.shape[1]):
        raise ValueError(f"a role position is beyond the prompt width {att.shape[1]}")
    out = np.full(att.shape[0], np.nan)
    ok = pos >= 0
    out[ok] = att[np.nonzero(ok)[0], pos[ok]]
    return out


def attention_by_role(attention_row: ArrayLike, roles: dict[str, ArrayLike], template_ids: ArrayLike,
                      template_names: tuple[str, ...], n_boot: int = 1000, seed: int = 0) -> list[TemplateRoleMass]:
    """Mean attention mass per (template, role) with a percentile bootstrap interval over prompts."""
    tids = np.asarray(template_ids, dtype=np.int64)
    out: list[TemplateRoleMass] = []
    for t, name in enumerate(template_names):
        rows = np.nonzero(tids == t)[0]
        for role, pos in roles.items():
            mass = role_mass(attention_row, pos)[rows]
            mass = mass[np.isfinite(mass)]
            if mass.size == 0:
                continue
            point, lo, hi = bootstrap_ci(lambda idx, m=mass: m[idx].mean(axis=-1), mass.size, n_boot, seed,
                                         vectorized=True)
            out.append(TemplateRoleMass(name, role, point, lo, hi, int(mass.size)))
    return out

