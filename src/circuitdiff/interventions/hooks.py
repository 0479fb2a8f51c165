"""Forward hooks on the real Hugging Face modules: record and replace component activations.

A head's activation is its slice of the input to the attention output projection,
shape (batch, seq, d_head); an MLP's is its output, (batch, seq, d_model). Patches
name batch *rows*, so one forward pass can carry many different interventions, one
variant per group of rows; all patches of a layer are applied by a single indexed write.

``last_mlp_at`` runs the last block's MLP only where the metric reads it (see its docstring).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from circuitdiff.models.adapters.base import Adapter
from circuitdiff.models.components import Component


@dataclass(frozen=True)
class Patch:
    """Replace ``component`` on batch ``rows`` by ``values`` (rows, seq, d); None means zero."""

    component: Component
    rows: torch.Tensor
    values: torch.Tensor | None = None


@dataclass
class Recording:
    """Activations seen during a hooked forward pass, by layer.

    ``heads[l]`` is (batch, seq, n_heads, d_head) and ``mlps[l]`` is (batch, seq, d_model),
    taken after any patch was applied (so they are what the model actually used). With
    ``keep_grad`` the tensors stay in the graph and ``grad_of`` reads their gradients.
    """

    n_heads: int
    heads_flat: dict[int, torch.Tensor] = field(default_factory=dict)
    mlps: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def heads(self) -> dict[int, torch.Tensor]:
        return {l: x.unflatten(-1, (self.n_heads, -1)) for l, x in self.heads_flat.items()}

    def get(self, component: Component) -> torch.Tensor:
        if component.head is None:
            return self.mlps[component.layer]
        return self.heads_flat[component.layer].unflatten(-1, (self.n_heads, -1))[:, :, component.head]

    def grad_of(self, component: Component) -> torch.Tensor:
        """d(objective)/d(activation) after ``backward``, same shape as ``get``."""
        if component.head is None:
            return self.mlps[component.layer].grad
        return self.heads_flat[component.layer].grad.unflatten(-1, (self.n_heads, -1))[:, :, component.head]


def _stack_values(patches: list[Patch], shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    parts = [
        torch.zeros((len(p.rows), *shape), dtype=ref.dtype, device=ref.device)
        if p.values is None
        else p.values.to(dtype=ref.dtype, device=ref.device).expand(len(p.rows), *shape)
        for p in patches
    ]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


class SequenceView:
    """Each block's (batch, seq) as it runs, where the adapter's MLP sees flattened rows (``mlp_rows_flat``):
    ``of(layer, y)`` is ``y`` as (batch, seq, d), ``back(y, like)`` undoes it. A no-op elsewhere."""

    def __init__(self, adapter: Adapter) -> None:
        self.shapes: dict[int, tuple[int, int]] = {}
        self.handles = []
        if adapter.mlp_rows_flat:
            for layer, block in enumerate(adapter.blocks()):
                self.handles.append(block.register_forward_pre_hook(
                    lambda _m, args, kw, layer=layer: self._keep(layer, args[0] if args else kw["hidden_states"]),
                    with_kwargs=True))

    def _keep(self, layer: int, x: torch.Tensor) -> None:
        self.shapes[layer] = (x.shape[0], x.shape[1])

    def of(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        return y.view(*self.shapes[layer], y.shape[-1]) if y.dim() == 2 and layer in self.shapes else y

    @staticmethod
    def back(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return y.reshape(like.shape) if y.shape != like.shape else y

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextmanager
def hooked(
    adapter: Adapter,
    patches: Sequence[Patch] = (),
    *,
    record: bool = False,
    keep_grad: bool = False,
) -> Iterator[Recording]:
    """Install the hooks for the duration of a ``with`` block.

    ``record`` keeps every layer's head and MLP activations; with ``keep_grad`` they stay
    in the autograd graph with ``retain_grad`` (for attribution patching).
    """
    recording = Recording(adapter.n_heads)
    head_patches: dict[int, list[Patch]] = defaultdict(list)
    mlp_patches: dict[int, list[Patch]] = defaultdict(list)
    for p in patches:
        (mlp_patches if p.component.head is None else head_patches)[p.component.layer].append(p)
    n_heads, d_head = adapter.n_heads, adapter.d_head

    def head_hook(layer: int):
        def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            todo = head_patches.get(layer)
            if todo:
                b, s, _ = x.shape
                rows = torch.cat([p.rows for p in todo]).to(x.device)
                heads = torch.cat([torch.full_like(p.rows, p.component.head) for p in todo]).to(x.device)
                values = _stack_values(todo, (s, d_head), x)
                x = x.clone()
                x.view(b, s, n_heads, d_head).permute(0, 2, 1, 3)[rows, heads] = values
            if record:
                if keep_grad and x.requires_grad:
                    x.retain_grad()
                recording.heads_flat[layer] = x if keep_grad else x.detach()
            return (x, *args[1:]) if todo else None

        return hook

    def mlp_hook(layer: int):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple | None:
            flat = output[0] if isinstance(output, tuple) else output
            y = view.of(layer, flat)
            todo = mlp_patches.get(layer)
            if todo:
                rows = torch.cat([p.rows for p in todo]).to(y.device)
                y = y.clone()
                y[rows] = _stack_values(todo, tuple(y.shape[1:]), y)
            if record:
                if keep_grad and y.requires_grad:
                    y.retain_grad()
                recording.mlps[layer] = y if keep_grad else y.detach()
            if adapter.mlp_output_mutated:
                y = y.clone()  # the block adds into the returned tensor in place
            if not todo and y is flat:
                return None
            y = view.back(y, flat)  # a flattened MLP continues from the (recorded) sequence view
            return (y, *output[1:]) if isinstance(output, tuple) else y

        return hook

    handles = []
    view = SequenceView(adapter)
    try:
        for layer in range(adapter.n_layers):
            if record or layer in head_patches:
                handles.append(adapter.attn_out(layer).register_forward_pre_hook(head_hook(layer)))
            if record or layer in mlp_patches:
                handles.append(adapter.mlp_out(layer).register_forward_hook(mlp_hook(layer)))
        yield recording
    finally:
        view.remove()
        for h in handles:
            h.remove()


@contextmanager
def last_mlp_at(adapter: Adapter, read_pos: torch.Tensor) -> Iterator[None]:
    """Inside the ``with`` block the last block's MLP runs only at each row's read positions.

    ``read_pos``: (rows,) one position per row, or (rows, t) several (a multi-token task's
    continuation positions, non-decreasing; a repeated position is computed twice, written and
    differentiated once).
    Nothing after the last block mixes positions, so its MLP's output elsewhere cannot reach
    the metric: the real module is given the read positions only and its output is scattered
    back into zeros. That is two thirds of the last block's work, which every pass of an
    exact sweep or a circuit search pays (a tenth of a 12-layer sweep, a fifth of a 6-layer
    one). Only for passes that read the metric: the MLP's output at other positions is 0.
    The scatter hook is prepended, so patches and recordings of the MLP see the full shape.
    """
    layer = adapter.n_layers - 1
    seq_len: list[int] = []
    pos2 = read_pos if read_pos.dim() == 2 else read_pos[:, None]  # non-decreasing along each row
    first_occurrence = torch.cat([torch.ones_like(pos2[:, :1], dtype=torch.bool), pos2[:, 1:] != pos2[:, :-1]], 1)

    def gather(_module: torch.nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        if x.dim() != 3 or x.shape[0] != len(read_pos):
            seq_len.clear()
            return None
        seq_len[:] = [x.shape[1]]
        rows = torch.arange(x.shape[0], device=x.device)
        return (x[rows[:, None], pos2.to(x.device)], *args[1:])

    def scatter(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple | None:
        if not seq_len:
            return None
        y = output[0] if isinstance(output, tuple) else output
        full = y.new_zeros(y.shape[0], seq_len[0], y.shape[-1])
        first = first_occurrence.to(y.device)[..., None]  # a repeated position once, so its gradient is once
        full.index_put_((torch.arange(y.shape[0], device=y.device)[:, None], pos2.to(y.device)),
                        torch.where(first, y, torch.zeros_like(y)), accumulate=True)
        return (full, *output[1:]) if isinstance(output, tuple) else full

    handles = [adapter.mlp_in(layer).register_forward_pre_hook(gather),
               adapter.mlp_out(layer).register_forward_hook(scatter, prepend=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
