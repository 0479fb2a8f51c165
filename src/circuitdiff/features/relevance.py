"""Each latent's effect on a task's metric in each model, through the crosscoder spliced in at the site.

The splice writes ``decode_m(f) + err`` into block ``L_m``'s output, with ``err = x - decode_m(f)`` held
fixed, so with nothing removed it is the model's own activation and the metric is the clean one. The latent
code exists at the paired positions only (``features.pairing``: with one tokenizer, every position but a row's
first); each model's other positions keep their own activation. Removing latent j subtracts ``f_j d_j^m`` (in
model units) at every paired position: the exact ablation. The attribution is
the first-order estimate of the same removal, ``-sum_pos dM/df_j * f_j``, from one backward pass.
The metric is the project's own (``interventions.forward``), read at the task's read position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from circuitdiff.features.activations import Normaliser, PairedRows, block_output, site_activations
from circuitdiff.features.crosscoder import CrossCoder
from circuitdiff.interventions.forward import Batch
from circuitdiff.interventions.readout import metric as read_out, read_metric
from circuitdiff.models.loading import LoadedModel


@contextmanager
def replace_site(lm: LoadedModel, layer: int, value: torch.Tensor) -> Iterator[None]:
    """Block ``layer``'s output becomes ``value`` (batch, seq, d_model) inside the block."""
    def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        new = value.to(block_output(output).dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = lm.adapter.blocks()[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class TaskRelevance:
    """One task: per-model metrics and per-latent effects (arrays over latents; NaN where not ablated)."""

    task: str
    clean: dict[str, float]
    spliced: dict[str, float]
    """Mean metric with the bare reconstruction (no error term) spliced in: how much of the task survives."""
    identity_gap: dict[str, float]
    """max |metric(splice with nothing removed) - metric(model)|: 0 up to float rounding."""
    attribution: dict[str, np.ndarray]
    ablation: dict[str, np.ndarray]


@dataclass(frozen=True)
class Site:
    """One model's side of the crosscoder: the model, its site layer and its normaliser."""

    lm: LoadedModel
    layer: int
    norm: Normaliser
    role: str  # "teacher" | "student"

    def decoder(self, model: CrossCoder) -> tuple[torch.Tensor, torch.Tensor]:
        return (model.dec_t, model.b_t) if self.role == "teacher" else (model.dec_s, model.b_s)


def batch_pairs(pairs: torch.Tensor, n_prompts: int, batches: tuple[Batch, Batch]) -> torch.Tensor:
    """The ``n_prompts`` prompt rows' pairs (row, teacher position, student position) on the batches' rows: a
    multi-token task's batch repeats each prompt once per branch; positions padded in either batch are left out.
    When the task is multi-token for one tokenizer only, that model's distractor rows have no counterpart in the
    other and keep their own activation."""
    n_rows = min(int(b.input_ids.shape[0]) for b in batches)
    copies = max(1, n_rows // max(1, n_prompts))
    tiled = torch.cat([pairs + torch.tensor([c * n_prompts, 0, 0]) for c in range(copies)])
    tiled = tiled[tiled[:, 0] < n_rows]
    real = [b.attention_mask.cpu().bool() for b in batches]
    return tiled[real[0][tiled[:, 0], tiled[:, 1]] & real[1][tiled[:, 0], tiled[:, 2]]]


def latent_codes(model: CrossCoder, sites: tuple[Site, Site], batches: tuple[Batch, Batch],
                 pairs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per model, the latent code (batch, seq_m, n) at its paired positions (zero at the others), from both
    models' site activations there; and those activations (batch, seq_m, d_m)."""
    raw = [site_activations(s.lm, s.layer, b.input_ids, b.attention_mask) for s, b in zip(sites, batches, strict=True)]
    dev = next(model.parameters()).device
    at = [(pairs[:, 0].to(x.device), pairs[:, col].to(x.device)) for x, col in zip(raw, (1, 2), strict=True)]
    with torch.no_grad():
        f = model.encode(sites[0].norm(raw[0][at[0]].to(dev)), sites[1].norm(raw[1][at[1]].to(dev)))
    codes = []
    for x, where in zip(raw, at, strict=True):
        dense = torch.zeros(x.shape[:2] + (model.n_latents,), device=dev)
        dense[tuple(w.to(dev) for w in where)] = f
        codes.append(dense)
    return codes, raw


def task_relevance(model: CrossCoder, sites: tuple[Site, Site], batches: tuple[Batch, Batch], rows: PairedRows,
                   task: str, top: int = 20) -> TaskRelevance:
    """Attribution for every latent in each model; exact ablation for the ``top`` latents by |attribution|
    in either model (the union, so that both models' effects exist for every ablated latent). ``rows``: the
    prompts with their paired positions; each model's other positions keep their own activation in every splice."""
    pairs = batch_pairs(rows.pairs, len(rows), batches)
    codes, raw = latent_codes(model, sites, batches, pairs)
    out = TaskRelevance(task, {}, {}, {}, {}, {})
    for site, batch, x, f, col in zip(sites, batches, raw, codes, (1, 2), strict=True):
        dec, bias = site.decoder(model)
        dec, bias = dec.detach().to(x.device), bias.detach().to(x.device)
        fd = f.to(x.device)
        on = torch.zeros(x.shape[:2] + (1,), dtype=torch.bool, device=x.device)
        on[pairs[:, 0].to(x.device), pairs[:, col].to(x.device)] = True
        recon = torch.where(on, site.norm.undo(fd @ dec + bias), x)
        err = x - recon
        clean = read_metric(site.lm.adapter, batch)
        with replace_site(site.lm, site.layer, recon + err):
            same = read_metric(site.lm.adapter, batch)
        with replace_site(site.lm, site.layer, recon):
            spliced = read_metric(site.lm.adapter, batch)
        f_var = fd.clone().requires_grad_(True)
        value = torch.where(on, site.norm.undo(f_var @ dec + bias), x) + err
        with torch.enable_grad(), replace_site(site.lm, site.layer, value):  # the same read-out, with its graph
            hidden = site.lm.adapter.final_hidden(batch.input_ids, batch.attention_mask)
            metric = read_out(site.lm.adapter, batch, hidden)
        (grad,) = torch.autograd.grad(metric.sum(), f_var)
        out.attribution[site.role] = (-(grad * fd).sum(1).mean(0)).double().cpu().numpy()
        out.clean[site.role], out.spliced[site.role] = float(clean.mean()), float(spliced.mean())
        out.identity_gap[site.role] = float((same - clean).abs().max())
    chosen = _top_union(out.attribution, top)
    for site, batch, x, f in zip(sites, batches, raw, codes, strict=True):
        dec = site.decoder(model)[0].detach().to(x.device)
        clean = read_metric(site.lm.adapter, batch)
        effects = np.full(model.n_latents, np.nan)
        for j in chosen:
            removed = f[..., j].to(x.device).unsqueeze(-1) * dec[j] * site.norm.scale
            with replace_site(site.lm, site.layer, x - removed):
                effects[j] = float((read_metric(site.lm.adapter, batch) - clean).mean())
        out.ablation[site.role] = effects
    return out


def _top_union(attribution: dict[str, np.ndarray], top: int) -> list[int]:
    chosen: dict[int, None] = {}
    for values in attribution.values():
        chosen.update(dict.fromkeys(int(j) for j in np.argsort(-np.abs(values), kind="stable")[:top]))
    return sorted(chosen)
