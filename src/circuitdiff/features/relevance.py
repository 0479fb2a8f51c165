"""Each latent's effect on a task's metric in each model, through the crosscoder spliced in at the site.

The splice writes ``decode_m(f) + err`` into block ``L_m``'s output, with ``err = x - decode_m(f)`` held
fixed, so with nothing removed it is the model's own activation and the metric is the clean one. Removing
latent j subtracts ``f_j d_j^m`` (in model units) at every position: the exact ablation. The attribution is
the first-order estimate of the same removal, ``-sum_pos dM/df_j * f_j``, from one backward pass.
The metric is the project's own (``interventions.forward``), read at the task's read position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from circuitdiff.features.activations import Normaliser, block_output, site_activations
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


def latent_codes(model: CrossCoder, sites: tuple[Site, Site], batches: tuple[Batch, Batch]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Latent activations (batch, seq, n) from both models' site activations on the task, and those activations."""
    raw = [site_activations(s.lm, s.layer, b.input_ids, b.attention_mask) for s, b in zip(sites, batches, strict=True)]
    dev = next(model.parameters()).device
    with torch.no_grad():
        f = model.encode(sites[0].norm(raw[0].to(dev)), sites[1].norm(raw[1].to(dev)))
    return f * batches[0].attention_mask.to(dev).unsqueeze(-1), raw


def task_relevance(model: CrossCoder, sites: tuple[Site, Site], batches: tuple[Batch, Batch], task: str,
                   top: int = 20) -> TaskRelevance:
    """Attribution for every latent in each model; exact ablation for the ``top`` latents by |attribution|
    in either model (the union, so that both models' effects exist for every ablated latent)."""
    f, raw = latent_codes(model, sites, batches)
    out = TaskRelevance(task, {}, {}, {}, {}, {})
    for site, batch, x in zip(sites, batches, raw, strict=True):
        dec, bias = site.decoder(model)
        dec, bias = dec.detach().to(x.device), bias.detach().to(x.device)
        fd = f.to(x.device)
        recon = site.norm.undo(fd @ dec + bias)
        err = x - recon
        clean = read_metric(site.lm.adapter, batch)
        with replace_site(site.lm, site.layer, recon + err):
            same = read_metric(site.lm.adapter, batch)
        with replace_site(site.lm, site.layer, recon):
            spliced = read_metric(site.lm.adapter, batch)
        f_var = fd.clone().requires_grad_(True)
        value = site.norm.undo(f_var @ dec + bias) + err
        with torch.enable_grad(), replace_site(site.lm, site.layer, value):  # the same read-out, with its graph
            hidden = site.lm.adapter.final_hidden(batch.input_ids, batch.attention_mask)
            metric = read_out(site.lm.adapter, batch, hidden)
        (grad,) = torch.autograd.grad(metric.sum(), f_var)
        out.attribution[site.role] = (-(grad * fd).sum(1).mean(0)).double().cpu().numpy()
        out.clean[site.role], out.spliced[site.role] = float(clean.mean()), float(spliced.mean())
        out.identity_gap[site.role] = float((same - clean).abs().max())
    chosen = _top_union(out.attribution, top)
    for site, batch, x in zip(sites, batches, raw, strict=True):
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
