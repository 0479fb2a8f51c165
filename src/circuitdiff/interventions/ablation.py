"""Ablation types and the replacement values each one puts in place of a component.

Every intervention here is "replace component c's activation on prompt i by R_c[i]":
zero, mean and resample ablation and both directions of activation patching differ
only in which run is the base and where R comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitdiff.interventions.choices import Ablation
from circuitdiff.interventions.hooks import Recording
from circuitdiff.models.components import Component


@dataclass(frozen=True)
class ActivationCache:
    """Every component's activation on a set of prompts, padded to a common width.

    heads: (n_layers, n, seq, n_heads, d_head); mlps: (n_layers, n, seq, d_model);
    mask: (n, seq), 1 on real tokens.
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_recordings(cls, recordings: list[Recording], mask: torch.Tensor,
                        rows: torch.Tensor | None = None) -> ActivationCache:
        """The recordings concatenated; ``rows``: which row of ``mask`` each recorded row is, when the
        micro-batches were not taken in order (a multi-token batch's two branches per micro-batch)."""
        n_layers = len(recordings[0].heads)
        heads = torch.stack([torch.cat([r.heads[l] for r in recordings]) for l in range(n_layers)])
        mlps = torch.stack([torch.cat([r.mlps[l] for r in recordings]) for l in range(n_layers)])
        if rows is not None:
            order = torch.argsort(rows.cpu()).to(heads.device)
            heads, mlps = heads[:, order], mlps[:, order]
        return cls(heads, mlps, mask)

    def prompts(self, n: int) -> ActivationCache:
        """The first ``n`` rows: the prompts' own (answer-branch) rows of a multi-token cache."""
        return ActivationCache(self.heads[:, :n], self.mlps[:, :n], self.mask[:n])

    def of(self, component: Component) -> torch.Tensor:
        """(n, seq, d) activations of one component."""
        if component.head is None:
            return self.mlps[component.layer]
        return self.heads[component.layer, :, :, component.head]


MIN_TEMPLATE_PROMPTS = 4
"""Fewer reference prompts than this in a template make its mean (or resample pool) noisy: warned."""


def _masked_position_mean(acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over prompts at each position, counting real tokens only; (L, n, s, ...) -> (L, s, ...).

    A position that no reference prompt reaches gets the mean over all real tokens.
    """
    shape = (1, mask.shape[0], mask.shape[1]) + (1,) * (acts.dim() - 3)
    m = mask.to(acts.dtype).view(shape)
    total = (acts * m).sum(1)
    count = m.sum(1)
    overall = (acts * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1)
    per_pos = total / count.clamp_min(1)
    return torch.where(count > 0, per_pos, overall.unsqueeze(1).expand_as(per_pos))


def template_means(acts: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per-position mean within each template group: (L, n, s, ...) -> (L, n_groups, s, ...).

    Averaging position i of one template with position i of another mixes different tokens
    (a name with a verb); within a template, position i is the same slot of the sentence.
    """
    n_groups = int(groups.max()) + 1
    return torch.stack([_masked_position_mean(acts[:, groups == g], mask[groups == g]) for g in range(n_groups)], dim=1)


def template_warnings(groups: torch.Tensor, names: tuple[str, ...], what: str, pooled: bool = False) -> list[str]:
    """One message naming every template with fewer than MIN_TEMPLATE_PROMPTS reference prompts (none if none).

    ``pooled``: such templates are ablated with the mean over all templates (see ``Replacement``).
    """
    counts = torch.bincount(groups, minlength=len(names)).tolist()
    thin = [f"'{names[g] if g < len(names) else g}' ({c})" for g, c in enumerate(counts) if 0 < c < MIN_TEMPLATE_PROMPTS]
    if not thin:
        return []
    consequence = ("they are ablated with the mean over all templates instead (their own mean would be mostly "
                   "the prompt itself)") if pooled else "their mean/resample ablation is noisy"
    return [f"{len(thin)} template(s) have fewer than {MIN_TEMPLATE_PROMPTS} {what} prompts: {', '.join(thin)}; "
            f"{consequence}"]


def _same_group_draws(groups: torch.Tensor, seed: int) -> torch.Tensor:
    """For each row, a random row of the same group (seeded); group -1 draws from every row."""
    gen = torch.Generator().manual_seed(seed)
    source = torch.empty_like(groups)
    for g in torch.unique(groups).tolist():
        members = torch.nonzero(groups == g).flatten()
        pool = torch.arange(len(groups)) if g < 0 else members
        source[members] = pool[torch.randint(0, len(pool), (len(members),), generator=gen)]
    return source


class Replacement:
    """R_c[i] for every component c and base prompt i, for one ablation type.

    ``groups`` (n_base,): each base prompt's template group; reference row j belongs to
    group ``groups[j]`` (reference and base prompts are paired row by row). Mean ablation
    averages, and resample ablation draws, only within the base prompt's group. A group
    with fewer than ``min_group`` reference prompts uses every prompt instead (for a
    reference made of the clean prompts themselves, where a one-prompt template's mean is
    the prompt's own activation and ablating it would change nothing). Without ``groups``
    every prompt is one group.
    """

    def __init__(self, ablation: Ablation, reference: ActivationCache | None, n_base: int, seed: int = 0,
                 groups: torch.Tensor | None = None, min_group: int = 1) -> None:
        self.ablation = ablation
        self.reference = reference
        if ablation is not Ablation.ZERO and reference is None:
            raise ValueError(f"{ablation.value} ablation needs reference activations")
        self.groups = torch.zeros(n_base, dtype=torch.long) if groups is None else groups.long().cpu()
        if ablation in (Ablation.MEAN, Ablation.RESAMPLE):
            assert reference is not None
            n_ref = reference.mask.shape[0]
            if groups is not None and n_ref != len(self.groups):
                raise ValueError("template-aligned ablation needs one reference prompt per base prompt")
            ref_groups = self.groups if groups is not None else torch.zeros(n_ref, dtype=torch.long)
            thin = torch.bincount(self.groups)[self.groups] < min_group
            pooled_id = int(ref_groups.max()) + 1  # an extra "group": the mean over every reference prompt
            self.groups = torch.where(thin, pooled_id, self.groups)
            self._mean_heads = torch.cat([template_means(reference.heads, reference.mask, ref_groups),
                                          _masked_position_mean(reference.heads, reference.mask).unsqueeze(1)], dim=1)
            self._mean_mlps = torch.cat([template_means(reference.mlps, reference.mask, ref_groups),
                                         _masked_position_mean(reference.mlps, reference.mask).unsqueeze(1)], dim=1)
            if ablation is Ablation.RESAMPLE:
                self._source = (_same_group_draws(torch.where(thin, -1, self.groups), seed) if groups is not None else
                                torch.randint(0, n_ref, (n_base,), generator=torch.Generator().manual_seed(seed)))

    def values(self, component: Component, prompts: torch.Tensor) -> torch.Tensor | None:
        """(len(prompts), seq, d) replacement for ``component`` on base prompts ``prompts``; None = zeros."""
        if self.ablation is Ablation.ZERO:
            return None
        assert self.reference is not None
        prompts = prompts.cpu()
        if self.ablation is Ablation.MEAN:
            return self._mean_of(component, self.groups[prompts])
        if self.ablation is Ablation.RESAMPLE:
            src = self._source[prompts]
            acts = self.reference.of(component)[src]
            real = self.reference.mask[src].bool().view(*src.shape, -1, *([1] * (acts.dim() - 2)))
            return torch.where(real, acts, self._mean_of(component, self.groups[prompts]))
        return self.reference.of(component)[prompts]  # paired patching

    def _mean_of(self, component: Component, groups: torch.Tensor) -> torch.Tensor:
        """(len(groups), seq, d): each row's template mean (a broadcast view when all rows share one)."""
        single = len(groups) > 0 and bool((groups == groups[0]).all())
        index = groups[:1] if single else groups
        if component.head is None:
            means = self._mean_mlps[component.layer][index]
        else:
            means = self._mean_heads[component.layer][index, :, component.head]
        return means.expand(len(groups), *means.shape[1:]) if single else means
