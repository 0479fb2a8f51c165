"""Record each MLP's hidden activation at the read position: a plain forward pre-hook on its down projection.

The down projection's input is the hidden activation after the nonlinearity (and after
the gate, in gated MLPs such as Llama's), so one hook site serves every architecture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from circuitdiff.interventions.hooks import SequenceView
from circuitdiff.models.adapters.base import Adapter


@contextmanager
def mlp_hidden_at(adapter: Adapter, read_pos: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """Yields a list filled, per layer, with (n, d_ff) float32 CPU hidden activations at ``read_pos``.

    Empty when the adapter names no down projection.
    """
    found: dict[int, torch.Tensor] = {}
    handles = []
    rows = torch.arange(read_pos.shape[0], device=read_pos.device)

    view = SequenceView(adapter)  # OPT's MLP runs on flattened (batch * seq) rows

    def hook_for(layer: int):  # noqa: ANN202
        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            found[layer] = view.of(layer, args[0])[rows, read_pos].detach().float().cpu()
        return hook

    n_layers = len(adapter.blocks())
    for layer in range(n_layers):
        module = adapter.mlp_down(layer)
        if module is not None:
            handles.append(module.register_forward_pre_hook(hook_for(layer)))
    out: list[torch.Tensor] = []
    try:
        yield out
    finally:
        view.remove()
        for h in handles:
            h.remove()
        if len(found) == n_layers:
            out.extend(found[layer] for layer in range(n_layers))
