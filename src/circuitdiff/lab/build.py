"""``train_teacher`` and ``distil``: recipe in, Hugging Face model folder with a model card out.

Both resume from ``<out_dir>/checkpoint`` when it exists (same recipe required), and the
final folder keeps float16 weights whose config says float32, so loaders upcast them.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from circuitdiff.lab.checkpoint import SNAPSHOTS_DIR
from circuitdiff.lab.circuit_loss import TARGETS_FILE, CircuitTerm, circuit_loss, recording
from circuitdiff.lab.card import REPORT_FILE, read_report, write_card
from circuitdiff.lab.data import answer_strings, build_pool, required_tokens, tokenizer_texts
from circuitdiff.lab.errors import LabError
from circuitdiff.lab.evaluate import evaluate_tasks
from circuitdiff.lab.losses import answer_weights, distillation_loss, lm_loss
from circuitdiff.lab.recipe import ALL_TASKS, DistillRecipe, Kind, TeacherRecipe, to_dict
from circuitdiff.lab.student_init import check_layers, default_layers, init_student
from circuitdiff.lab.tokenizer import single_token_failures, train_bpe, train_wordpiece
from circuitdiff.lab.train import CHECKPOINT_DIR, LoopResult, LossFn, resume_state, run_loop, torch_threads
from circuitdiff.models.loading import load_model, resolve

EVAL_SEED = 0


@dataclass
class BuildResult:
    """A finished (or deliberately stopped) run: where it is and what it measured."""

    out_dir: Path
    completed: bool
    report: dict[str, Any]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-save/load bars and config warnings while we run; restore after."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def make_tokenizer(recipe: TeacherRecipe) -> Any:
    """Train the pair's tokenizer and check every built-in answer is one token."""
    required = required_tokens(recipe.kind)
    texts = tokenizer_texts(recipe.kind, recipe.data, recipe.seed)
    train = train_bpe if recipe.kind == "causal" else train_wordpiece
    tok = train(texts, recipe.vocab_size, required, recipe.context)
    bad = single_token_failures(tok, answer_strings(recipe.kind))
    if bad:
        raise LabError(f"tokenizer keeps {len(bad)} task answers multi-token, e.g. {bad[:3]}")
    return tok


def make_teacher(recipe: TeacherRecipe, tokenizer: Any) -> PreTrainedModel:
    """A freshly initialised GPT-2 or BERT (seeded) sized by ``recipe``."""
    torch.manual_seed(recipe.seed)
    common = dict(vocab_size=len(tokenizer))
    if recipe.kind == "causal":
        eos = tokenizer.eos_token_id
        cfg = GPT2Config(**common, n_positions=recipe.context, n_embd=recipe.d_model, n_layer=recipe.n_layers,
                         n_head=recipe.n_heads, n_inner=recipe.d_mlp, resid_pdrop=recipe.dropout,
                         embd_pdrop=recipe.dropout, attn_pdrop=recipe.dropout,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        return GPT2LMHeadModel(cfg)
    cfg = BertConfig(**common, hidden_size=recipe.d_model, num_hidden_layers=recipe.n_layers,
                     num_attention_heads=recipe.n_heads, intermediate_size=recipe.d_mlp,
                     max_position_embeddings=recipe.context, hidden_dropout_prob=recipe.dropout,
                     attention_probs_dropout_prob=recipe.dropout, pad_token_id=tokenizer.pad_token_id,
                     layer_norm_eps=1e-12)
    return BertForMaskedLM(cfg)


def load_lab_model(folder: Path, kind: Kind) -> PreTrainedModel:
    """A lab model folder (or checkpoint) as float32."""
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    return auto.from_pretrained(folder, dtype=torch.float32)


def context_of(model: PreTrainedModel) -> int:
    """Longest sequence the model takes (GPT-2's config maps this name to ``n_positions``)."""
    return int(model.config.max_position_embeddings)


def architecture(model: PreTrainedModel) -> dict[str, Any]:
    """Sizes for the model card, read from the config (standard names; GPT-2/DistilBERT map them)."""
    c = model.config
    d_mlp = (getattr(c, "intermediate_size", None) or getattr(c, "hidden_dim", None) or getattr(c, "n_inner", None)
             or 4 * c.hidden_size)
    return {"model_type": c.model_type, "architecture": type(model).__name__, "n_layers": c.num_hidden_layers,
            "n_heads": c.num_attention_heads, "n_kv_heads": getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            "d_model": c.hidden_size, "d_mlp": d_mlp, "context": c.max_position_embeddings,
            "vocab_size": c.vocab_size, "n_parameters": sum(p.numel() for p in model.parameters())}


def cost_per_1k_tokens(loop: LoopResult) -> dict[str, float]:
    """Training cost per thousand tokens read (distillation: teacher forward + student step),
    and this process's peak resident memory, as measured on the machine that ran it."""
    per = 1000 / max(1, loop.tokens)
    cost = {"wall_s": round(loop.wall_time_s * per, 3), "cpu_s": round(loop.cpu_time_s * per, 3)}
    try:
        import resource  # POSIX only
    except ImportError:
        return cost
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return {**cost, "peak_rss_gib": round(peak / (2**30 if sys.platform == "darwin" else 2**20), 2)}


def save_final(model: PreTrainedModel, tokenizer: Any, out_dir: Path) -> None:
    """float16 safetensors + tokenizer; config keeps dtype float32 so loading upcasts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.float16)
    half.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in out_dir.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)


def _prepare(out_dir: Path, overwrite: bool) -> None:
    if (out_dir / "config.json").is_file() and not (out_dir / CHECKPOINT_DIR).exists():
        if not overwrite:
            raise LabError(f"{out_dir} already holds a finished model; pass overwrite to replace it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _finish(out_dir: Path, model: PreTrainedModel, tokenizer: Any, kind: Kind, loop: LoopResult, report: dict[str, Any],
            eval_prompts: int, keep_checkpoint: bool) -> BuildResult:
    """Save the final folder, evaluate the saved (float16-rounded) model, write the card."""
    if not loop.completed:
        return BuildResult(out_dir, False, {**report, "steps": loop.steps})
    save_final(model, tokenizer, out_dir)
    saved = load_lab_model(out_dir, kind)
    report.update(steps=loop.steps, tokens=loop.tokens, wall_time_s=round(loop.wall_time_s, 1),
                  cpu_time_s=round(loop.cpu_time_s, 1), threads=torch.get_num_threads(),
                  cost_per_1k_tokens=cost_per_1k_tokens(loop),
                  last_losses=loop.last_losses, architecture=architecture(saved), eval_seed=EVAL_SEED,
                  evaluation=evaluate_tasks(saved, tokenizer, kind, ALL_TASKS, eval_prompts, EVAL_SEED))
    write_card(out_dir, report)
    if not keep_checkpoint:
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return BuildResult(out_dir, True, report)


def train_teacher(recipe: TeacherRecipe, out_dir: str | Path, *, overwrite: bool = False, stop_at: int | None = None,
                  progress: bool = True, eval_prompts: int = 256, keep_checkpoint: bool = False,
                  name: str | None = None, threads: int | None = 1) -> BuildResult:
    """Train a tokenizer and a teacher from scratch (resuming a matching checkpoint in ``out_dir``).

    ``threads``: torch intra-op threads while training (None = leave as is); see ``torch_threads``.
    """
    with torch_threads(threads), quiet_transformers():
        return _train_teacher(recipe, Path(out_dir), overwrite, stop_at, progress, eval_prompts, keep_checkpoint, name)


def _train_teacher(recipe: TeacherRecipe, out: Path, overwrite: bool, stop_at: int | None, progress: bool,
                   eval_prompts: int, keep_checkpoint: bool, name: str | None) -> BuildResult:
    _prepare(out, overwrite)
    rdict = {"role": "teacher", **to_dict(recipe)}
    resumed = resume_state(out, rdict, discard_other=overwrite)
    if resumed is not None:
        folder, state, opt = resumed
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = load_lab_model(folder, recipe.kind)
    else:
        tokenizer = make_tokenizer(recipe)
        model = make_teacher(recipe, tokenizer)
    pool = build_pool(recipe.kind, tokenizer, recipe.data, recipe.seed, recipe.context)
    causal = recipe.kind == "causal"

    def loss_fn(m: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = lm_loss(logits, batch["labels"], causal, answer_weights(batch, recipe.data.answer_weight))
        return loss, {"lm": float(loss.detach())}

    loop = run_loop(model, tokenizer, pool, recipe.kind, recipe.data, recipe.optim, recipe.seed, out, rdict, loss_fn,
                    resumed=None if resumed is None else resumed[1:], stop_at=stop_at, progress=progress,
                    description=f"teacher {name or out.name}")
    report = {"name": name or out.name, "role": "teacher", "kind": recipe.kind, "recipe": to_dict(recipe),
              "data": pool.summary}
    return _finish(out, model, tokenizer, recipe.kind, loop, report, eval_prompts, keep_checkpoint)


@dataclass
class Teacher:
    """A frozen teacher for distillation, with what the student and its card need to know."""

    model: PreTrainedModel
    tokenizer: Any
    kind: Kind
    name: str
    source: str
    """Resolved path (or Hub id / built-in name): part of the recipe a checkpoint must match."""
    lab_made: bool
    """Made by the lab (or shipped): its tokenizer keeps every built-in answer one token."""


def load_teacher(spec: str | Path) -> Teacher:
    """Any model circuitdiff can load: a lab folder, built-in name, model folder, ``x.gguf`` or Hub id.

    Loaded through ``circuitdiff.models.loading.load_model``, so the same safety rules apply (no
    pickle, no remote code), then switched to SDPA attention, which trains faster than eager.
    """
    loaded = load_model(str(spec))
    model = loaded.model
    model.set_attn_implementation("sdpa")
    typed = Path(str(spec)).expanduser()  # a path the user typed, or a built-in name / Hub id
    source = str(typed.resolve()) if typed.exists() else str(spec)
    location = Path(resolve(str(spec))[0])  # where a built-in name points, too
    lab_made = location.is_dir() and (location / REPORT_FILE).is_file()
    name = read_report(location)["name"] if lab_made else (typed.stem if typed.exists() else str(spec))
    kind: Kind = "masked" if loaded.adapter.masked_lm else "causal"
    return Teacher(model, loaded.tokenizer, kind, name, source, lab_made)


def distil(teacher: str | Path, recipe: DistillRecipe, out_dir: str | Path, *, overwrite: bool = False,
           stop_at: int | None = None, progress: bool = True, eval_prompts: int = 256, keep_checkpoint: bool = False,
           name: str | None = None, threads: int | None = 1, snapshots: bool = False) -> BuildResult:
    """Distil a student from ``teacher`` (see ``load_teacher``): GPT-2/Llama -> fewer of its own
    layers, BERT -> DistilBERT. The card reports teacher and student accuracy side by side.

    ``snapshots`` keeps the student at step 0, every ``recipe.optim.save_every`` steps and at
    the end as model folders under ``out_dir/checkpoints`` (read by ``circuitdiff trajectory``).
    """
    with torch_threads(threads), quiet_transformers():
        return _distil(load_teacher(teacher), recipe, Path(out_dir), overwrite, stop_at, progress, eval_prompts,
                       keep_checkpoint, name, snapshots)


def _distil(t: Teacher, recipe: DistillRecipe, out: Path, overwrite: bool, stop_at: int | None, progress: bool,
            eval_prompts: int, keep_checkpoint: bool, name: str | None, snapshots: bool = False) -> BuildResult:
    n_layers = t.model.config.num_hidden_layers
    layers = tuple(check_layers(recipe.layers if recipe.layers is not None else default_layers(n_layers), n_layers))
    _prepare(out, overwrite)
    rdict = {"role": "student", "teacher": t.source, **to_dict(recipe)}
    resumed = resume_state(out, rdict, discard_other=overwrite)
    if resumed is None:  # a fresh start: nothing of an earlier, abandoned run may be mistaken for this one's
        shutil.rmtree(out / SNAPSHOTS_DIR, ignore_errors=True)
        (out / TARGETS_FILE).unlink(missing_ok=True)
    student = load_lab_model(resumed[0], t.kind) if resumed else init_student(t.model, layers)
    student.set_attn_implementation("sdpa")
    pool = build_pool(t.kind, t.tokenizer, recipe.data, recipe.seed, context_of(t.model))
    term = circuit_term(t, recipe, out)
    loss_fn = distil_loss_fn(t, recipe, term, start=resumed[1]["step"] if resumed else 0)
    loop = run_loop(student, t.tokenizer, pool, t.kind, recipe.data, recipe.optim, recipe.seed, out, rdict, loss_fn,
                    resumed=None if resumed is None else resumed[1:], stop_at=stop_at, progress=progress,
                    description=f"student {name or out.name}", snapshots=snapshots)
    report = {"name": name or out.name, "role": "student", "kind": t.kind, "teacher": t.name, "lab_tokenizer": t.lab_made,
              "teacher_architecture": architecture(t.model), "recipe": {**to_dict(recipe), "layers": list(layers)},
              "data": pool.summary}
    if term is not None:
        report["circuit_loss"] = term.summary()
    if loop.completed:
        report["teacher_evaluation"] = evaluate_tasks(t.model, t.tokenizer, t.kind, ALL_TASKS, eval_prompts, EVAL_SEED)
    return _finish(out, student, t.tokenizer, t.kind, loop, report, eval_prompts, keep_checkpoint)


def circuit_term(t: Teacher, recipe: DistillRecipe, out: Path) -> CircuitTerm | None:
    """The circuit loss's state for this run, or None when ``alpha_circuit`` is 0."""
    if recipe.alpha_circuit <= 0:
        return None
    return CircuitTerm(t.model, t.tokenizer, recipe.circuit_tasks, refresh=recipe.circuit_refresh,
                       n_prompts=recipe.circuit_prompts, min_share=recipe.circuit_min_share, run_dir=out)


def distil_loss_fn(t: Teacher, recipe: DistillRecipe, term: CircuitTerm | None, start: int = 0) -> LossFn:
    """The student's loss: KL + LM + cosine, plus ``alpha_circuit`` x the circuit loss when ``term`` is set.

    Calls come one per step from ``start`` on (``run_loop`` trains step by step), which is how
    the circuit term knows when its pairs are due for a refresh.
    """
    causal = t.kind == "causal"
    want_hidden = recipe.alpha_cos > 0
    steps = itertools.count(start)

    def loss_fn(m: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        step = next(steps)
        pairs = term.pairs_at(m, step) if term is not None else ()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with ExitStack() as hooks:
            t_rec = hooks.enter_context(recording(t.model, keep_grad=False)) if pairs else None
            with torch.no_grad():
                t_out = t.model(**inputs, output_hidden_states=want_hidden)
        with ExitStack() as hooks:
            s_rec = hooks.enter_context(recording(m, keep_grad=True)) if pairs else None
            s_out = m(**inputs, output_hidden_states=want_hidden)
        total, parts = distillation_loss(s_out, t_out, batch, causal=causal, alpha_kl=recipe.alpha_kl,
                                         alpha_lm=recipe.alpha_lm, alpha_cos=recipe.alpha_cos,
                                         temperature=recipe.temperature, kl_on_masked_only=recipe.kl_on_masked_only,
                                         answer_weight=recipe.data.answer_weight)
        if pairs:
            circuit = circuit_loss(s_rec, t_rec, pairs, batch["attention_mask"])
            total = total + recipe.alpha_circuit * circuit
            parts["circuit"] = float(circuit.detach())
        return total, parts

    return loss_fn
