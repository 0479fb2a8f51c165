"""circuitdiff where distillation runs: a ``Trainer`` callback and the circuit loss for any training loop.

    from circuitdiff.integrations import CircuitDiffCallback, CircuitLoss
    trainer.add_callback(CircuitDiffCallback("tiny-gpt2", ["ioi"], every_n_steps=50, out="runs/circuits"))

``CircuitDiffCallback`` compares the student with the teacher while a ``transformers.Trainer``
(or a trainer built on it, such as TRL's) trains it, and logs the numbers through the
Trainer's own reporting integrations. ``CircuitLoss`` is the lab's circuit-preserving term
as a ``torch.nn.Module``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CircuitDiffCallback", "CircuitLoss"]


def __getattr__(name: str) -> Any:
    """Imported on first use: both import torch and transformers, which ``circuitdiff --help`` must not wait for."""
    if name == "CircuitDiffCallback":
        from circuitdiff.integrations.callback import CircuitDiffCallback

        return CircuitDiffCallback
    if name == "CircuitLoss":
        from circuitdiff.integrations.circuit_loss import CircuitLoss

        return CircuitLoss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
