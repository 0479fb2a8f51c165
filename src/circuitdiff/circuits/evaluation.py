"""Running a circuit: every component outside it ablated at once, many sets per forward pass.

This is the evaluation half of discovery (scoring/ordering is the other half), written so
that any search can use it: give sets of ablated components, get the mean metric of each.
Passes reuse the ``prefix.py`` machinery of the node sweep: prompts are trimmed to the
positions the metric depends on, variants are stacked along the batch, and a pass starts
at the lowest layer it must recompute. The prefix it starts from is either the clean one
or that of an ablated *state* (a set of components already ablated, e.g. everything pruned
so far), recorded while that state was evaluated, so a pruning step that adds a component
at layer L costs what the sweep pays for that component: blocks L..end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from circuitdiff.interventions.ablation import Replacement
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.hooks import Patch
from circuitdiff.interventions.prefix import block_outputs, needed_width, start_at, trim
from circuitdiff.interventions.readout import read_metric
from circuitdiff.interventions.exact import DEFAULT_MEMORY_BUDGET, MIN_PASS_TOKENS, rows_per_forward
from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component

State = frozenset[Component]
Prefix = dict[int, Any]
"""Block index -> that block's exact return value for all prompts (trimmed), under one state."""
CLEAN: State = frozenset()


def cat_rows(values: Sequence[Any]) -> Any:
    """Block return values (tensor, tuple or None) of several variants, concatenated along the batch."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return first if len(values) == 1 else torch.cat(list(values))
    if isinstance(first, tuple):
        return tuple(cat_rows([v[i] for v in values]) for i in range(len(first)))
    return first


def take_rows(value: Any, rows: slice | torch.Tensor) -> Any:
    """The batch rows ``rows`` of a block's return value."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, tuple):
        return tuple(take_rows(v, rows) for v in value)
    return value


def _compact(value: Any) -> Any:
    """The same values without keeping the whole stacked pass they were sliced from alive."""
    if isinstance(value, torch.Tensor):
        whole = value.untyped_storage().nbytes()
        return value.clone() if whole > value.numel() * value.element_size() else value
    if isinstance(value, tuple):
        return tuple(_compact(v) for v in value)
    return value


class CircuitEvaluator:
    """Mean metric over the prompts with a set of components ablated; memoised, batched, prefix-reusing."""

    def __init__(self, adapter: Adapter, base: Batch, replacement: Replacement,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, prompts: torch.Tensor | None = None) -> None:
        """``prompts``: which of the replacement's base prompts ``base``'s rows are (default: all, in order)."""
        self.adapter, self.replacement = adapter, replacement
        self.components = adapter.components()
        self.width = int(needed_width(adapter, base).max())
        self.base = trim(base, self.width)
        self.n = len(base)
        self.b = base.branches  # rows per prompt: 2 for a multi-token task (answer and distractor rows)
        self.max_variants = max(1, rows_per_forward(adapter, self.width, memory_budget) // (self.b * self.n))
        self.efficient_variants = max(1, min(self.max_variants, MIN_PASS_TOKENS // (self.b * self.n * self.width)))
        """Variants a pass needs to keep a CPU matrix multiply efficient (see ``sweep.MIN_PASS_TOKENS``)."""
        self.prompts = torch.arange(self.n) if prompts is None else prompts.cpu()
        self.rows = torch.arange(self.n)
        n_all = len(replacement.groups) // self.b  # the replacement's rows: every base prompt, branch-major
        self._value_rows = torch.cat([b * n_all + self.prompts for b in range(self.b)])
        self._values: dict[Component, torch.Tensor | None] = {}
        self._memo: dict[State, float] = {}
        self._prefixes: dict[State, Prefix] = {}
        self.pinned: set[State] = set()
        """States whose prefixes stay cached (e.g. the pruned circuits, which the measures start from)."""
        self.passes = 0
        self.block_rows = 0
        """Accounting: block evaluations run (rows x blocks), the unit the benchmark compares."""

    @property
    def block_tokens(self) -> int:
        """Block evaluations x positions: the arithmetic, comparable with the sweep's and across buckets."""
        return self.block_rows * self.width

    # --- prefixes of states ---------------------------------------------------------------
    def prefix(self, state: State) -> Prefix:
        if state not in self._prefixes:
            if state != CLEAN:
                raise KeyError("the prefix of a state is recorded while the state is evaluated (see extend)")
            self._prefixes[CLEAN] = block_outputs(self.adapter, self.base, range(self.adapter.n_layers - 1))
            self.block_rows += self.b * self.n * (self.adapter.n_layers - 1)
        return self._prefixes[state]

    def forget_except(self, keep: Iterable[State]) -> None:
        """Drop cached prefixes of states no search needs any more (the clean and ``pinned`` ones stay)."""
        wanted = set(keep) | {CLEAN} | self.pinned
        for state in [s for s in self._prefixes if s not in wanted]:
            del self._prefixes[state]
        for state, prefix in self._prefixes.items():  # survivors: copy out of the passes they were recorded in
            self._prefixes[state] = {l: _compact(v) for l, v in prefix.items()}

    def known(self, ablated: State) -> float | None:
        """The mean metric of ``ablated`` if some search already evaluated it, else None."""
        return self._memo.get(ablated)

    def cached_base(self, ablated: State) -> State:
        """The cached state inside ``ablated`` from which a pass can start latest (clean at worst)."""
        self.prefix(CLEAN)
        return self._base_for(ablated)

    def _base_for(self, ablated: State) -> State:
        """The cached state inside ``ablated`` from which a pass can start latest (clean at worst)."""
        best, best_start = CLEAN, self._start(ablated)
        for state in self._prefixes:
            if state and state < ablated and self._start(ablated - state) > best_start:
                best, best_start = state, self._start(ablated - state)
        return best

    # --- evaluation ----------------------------------------------------------------------
    def ablated(self, sets: Sequence[Iterable[Component]]) -> list[float]:
        """Mean metric with each set ablated (everything else kept).

        Each pass starts from the cached state inside the set that lets it start latest
        (the clean prefix at worst); values are memoised by set.
        """
        keys = [frozenset(s) for s in sets]
        todo = [(self._base_for(k), k) for k in dict.fromkeys(keys) if k not in self._memo and k]
        for chunk in self._passes(todo):
            values, _ = self._run(chunk, record=False)
            self._memo.update(zip((k for _, k in chunk), values))
        if any(not k for k in keys) and CLEAN not in self._memo:
            self._memo[CLEAN] = self._clean_metric()
        return [self._memo[k] for k in keys]

    def _passes(self, todo: list[tuple[State, State]]) -> list[list[tuple[State, State]]]:
        """(base, set) variants grouped into passes: by start layer, since every variant of a pass runs from
        the pass's lowest start; a later start joins only a pass too small to keep a matrix multiply busy."""
        todo = sorted(todo, key=lambda v: self._start(v[1] - v[0]))
        passes: list[list[tuple[State, State]]] = []
        for variant in todo:
            last = passes[-1] if passes else None
            if last is not None and len(last) < self.max_variants and (
                    len(last) < self.efficient_variants
                    or self._start(variant[1] - variant[0]) == self._start(last[0][1] - last[0][0])):
                last.append(variant)
            else:
                passes.append([variant])
        return passes

    def kept(self, sets: Sequence[Iterable[Component]]) -> list[float]:
        """Mean metric with only each set kept: every component outside it ablated at once."""
        return self.ablated([[c for c in self.components if c not in set(s)] for s in sets])

    def extend(self, steps: Sequence[tuple[State, Component | Iterable[Component]]]) -> list[tuple[float, State]]:
        """For each (state, c): the mean metric with state + c ablated (c: one component or several),
        recording the new state's prefix.

        ``state`` must have a recorded prefix. The new state's prefix is kept (``forget_except``
        drops it); its blocks below the lowest added layer are the old state's, unchanged.
        """
        out: list[tuple[float, State]] = []
        for first in range(0, len(steps), self.max_variants):
            chunk = steps[first : first + self.max_variants]
            variants = [(state, state | ({c} if isinstance(c, Component) else frozenset(c))) for state, c in chunk]
            values, records = self._run(variants, record=True)
            for (state, new), value, record in zip(variants, values, records):
                start = min(c.layer for c in new - state)
                old = self._prefixes[state]
                self._prefixes[new] = {l: (old[l] if l < start else record[l]) for l in old}
                self._memo[new] = value
                out.append((value, new))
        return out

    def _start(self, ablated: State) -> int:
        return min(c.layer for c in ablated)

    def _clean_metric(self) -> float:
        self.passes += 1
        self.block_rows += self.b * self.n * self.adapter.n_layers
        return float(read_metric(self.adapter, self.base).double().mean())

    def _value(self, c: Component) -> torch.Tensor | None:
        if c not in self._values:
            values = self.replacement.values(c, self._value_rows)
            self._values[c] = None if values is None else values[:, : self.width]
        return self._values[c]

    @torch.no_grad()
    def _run(self, variants: list[tuple[State, State]], record: bool) -> tuple[list[float], list[Prefix]]:
        """One stacked pass: variant j ablates its full set, starting from its base state's prefix."""
        adapter, n, k = self.adapter, self.n, len(variants)
        start = min(self._start(full - base) for base, full in variants)
        device = self.base.input_ids.device
        members: dict[Component, list[int]] = {}
        for j, (_, full) in enumerate(variants):
            for c in full:
                if c.layer >= start:
                    members.setdefault(c, []).append(j)
        stacked = self.base.repeat(k)
        variant_rows = [stacked.rows_of(j * n + self.rows) for j in range(k)]  # each variant's rows, branch-major
        patches = []
        for c, js in members.items():
            rows = torch.cat([variant_rows[j] for j in js]).to(device)
            value = self._value(c)
            patches.append(Patch(c, rows, None if value is None else value.repeat(len(js), 1, 1)))
        prefix = cat_rows([self.prefix(base)[start - 1] for base, _ in variants]) if start > 0 else None
        if self.b > 1 and prefix is not None:  # variants were concatenated whole: into the stacked batch's row order
            prefix = take_rows(prefix, torch.argsort(torch.cat(variant_rows)).to(device))
        recorded: dict[int, Any] = {}
        blocks = adapter.blocks()
        handles = [blocks[l].register_forward_hook(lambda _m, _a, out, l=l: recorded.__setitem__(l, out))
                   for l in range(start, adapter.n_layers - 1)] if record else []
        try:
            with start_at(adapter, start, prefix):
                diff = read_metric(adapter, stacked, patches)
        finally:
            for h in handles:
                h.remove()
        self.passes += 1
        self.block_rows += k * self.b * n * (adapter.n_layers - start)
        values = diff.double().view(k, n).mean(1).tolist()
        own: list[Any] = [slice(j * n, (j + 1) * n) for j in range(k)] if self.b == 1 else \
            [r.to(device) for r in variant_rows]
        records = [{l: take_rows(v, own[j]) for l, v in recorded.items()} for j in range(k)]
        return values, records
