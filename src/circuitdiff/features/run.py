"""``circuitdiff.features``: load -> paired activations at matched sites -> train -> analyse -> relevance -> files.

Data flows one way. The corpus is split by paragraph: nine in ten train the crosscoder, one in ten (plus the
tasks' prompts) is where latents are analysed and their top contexts are found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from circuitdiff.features.activations import (
    Chunk, FeaturesError, Normaliser, PairedRows, Rows, concat_paired, default_teacher_layer, match_student_layer,
    paired_text_rows, stream_pairs,
)
from circuitdiff.features.analysis import analyse
from circuitdiff.features.crosscoder import CrossCoder
from circuitdiff.features.pairing import as_rows, prompt_pairs
from circuitdiff.features.relevance import Site, task_relevance
from circuitdiff.features.results import FeatureResults, contexts_for, feature_table, headline, summary
from circuitdiff.features.train import TrainSettings, default_lr, train_crosscoder
from circuitdiff.models.loading import LoadedModel, load_model
from circuitdiff.options import CompareOptions
from circuitdiff.pipeline import batches, model_context


@dataclass(frozen=True)
class FeatureOptions:
    """Knobs of ``features``; all are written into features.json."""

    n_latents: int = TrainSettings.n_latents  # the training knobs' defaults live in TrainSettings alone
    k: int = TrainSettings.k
    n_tokens: int = TrainSettings.n_tokens
    batch_size: int = TrainSettings.batch_size
    lr: float | None = None
    """Adam's learning rate; None: ``train.default_lr`` of the wider of the two streams."""
    k_aux: int | None = TrainSettings.k_aux
    dead_after_tokens: int = TrainSettings.dead_after_tokens
    context: int = 64
    analysis_tokens: int = 30_000
    corpus_tokens: int | None = None
    """At most this many corpus tokens train (None: the whole training split); the token budget cycles over them."""
    cache_bytes: int = 256 * 2**20
    """Training activations up to this size are kept after the first pass instead of recomputed; above it they
    are streamed on every pass (memory stays bounded either way)."""
    n_prompts: int = 64
    top: int = 20
    seed: int = TrainSettings.seed
    corpus: str = "sample"
    teacher_layer: int | None = None
    student_layer: int | None = None


def parse_site(text: str | None) -> tuple[int | None, int | None]:
    """'teacher:L,student:L' (either part may be left out) -> (teacher layer, student layer)."""
    if not text:
        return None, None
    layers: dict[str, int] = {}
    for part in text.split(","):
        role, _, value = part.partition(":")
        if role.strip() not in ("teacher", "student") or not value.strip().lstrip("-").isdigit():
            raise FeaturesError(f"--site must look like teacher:4,student:2, got '{text}'")
        layers[role.strip()] = int(value)
    return layers.get("teacher"), layers.get("student")


def _load(model: str | LoadedModel, device: str) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model, device=device)


def _check_layer(lm: LoadedModel, layer: int, role: str) -> int:
    if not 0 <= layer < lm.adapter.n_layers:
        raise FeaturesError(f"{role} layer {layer} is out of range: '{lm.name}' has {lm.adapter.n_layers} blocks")
    return layer


def _task_rows(teacher: LoadedModel, student: LoadedModel, tasks: Sequence[str], options: FeatureOptions):  # noqa: ANN202
    """Each task's prompts as both models encode them, paired position by position when the encodings are
    identical, else at common token ends inside the text both read (``features.pairing.prompt_pairs``)."""
    from circuitdiff.compare import prepare_tasks, same_tokenisation
    from circuitdiff.tasks.spans import token_spans

    prepared = prepare_tasks(teacher, student, tasks, CompareOptions(n_prompts=options.n_prompts, seed=options.seed))
    rows = []
    for item in prepared:
        t_rows, s_rows = (Rows(enc.input_ids, enc.attention_mask, (item.name,) * enc.input_ids.shape[0])
                          for enc in (item.teacher[1], item.student[1]))
        if same_tokenisation(item.teacher[1], item.student[1]):
            rows.append(PairedRows.same(t_rows))
            continue
        spans = [token_spans(task, enc, lm.tokenizer) for (task, enc), lm in
                 ((item.teacher, teacher), (item.student, student))]
        if spans[0] is None or spans[1] is None:
            raise FeaturesError(f"task '{item.name}': the two tokenisations cannot be paired (a slow tokenizer, "
                                "or prompts that do not re-tokenise to their encoding)")
        pairs = torch.from_numpy(as_rows(prompt_pairs(spans[0], spans[1])))
        if not len(pairs):
            raise FeaturesError(f"task '{item.name}': the two tokenisations share no token boundary in the prompts")
        rows.append(PairedRows(t_rows, s_rows, pairs))
    return prepared, rows


def features(
    teacher: str | LoadedModel,
    student: str | LoadedModel,
    tasks: Sequence[str] = ("ioi",),
    out: str | Path | None = "circuitdiff-features",
    options: FeatureOptions = FeatureOptions(),
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> FeatureResults:
    """Train a BatchTopK crosscoder on both models' residual streams at matched sites and say which features
    are shared, teacher-only (dropped) or student-only (invented), and which matter for each task."""
    from circuitdiff.lab.corpus import load_corpus

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    t_lm, s_lm = _load(teacher, device), _load(student, device)
    prepared, prompt_rows = _task_rows(t_lm, s_lm, tasks, options)
    paragraphs = load_corpus(options.corpus)
    tokenizers = (t_lm.tokenizer, s_lm.tokenizer)
    context = tuple(min(options.context, model_context(lm) or options.context) for lm in (t_lm, s_lm))
    corpus_rows = paired_text_rows([p for i, p in enumerate(paragraphs) if i % 10], tokenizers, context)
    if options.corpus_tokens is not None:
        corpus_rows = corpus_rows.head(max(1, options.corpus_tokens // options.context))
    if not len(corpus_rows.pairs):
        raise FeaturesError(f"'{t_lm.name}' and '{s_lm.name}' tokenise the corpus with no token boundary in common")
    train_rows = concat_paired([corpus_rows, *prompt_rows], tokenizers)
    held = paired_text_rows([p for i, p in enumerate(paragraphs) if i % 10 == 0] or paragraphs, tokenizers, context)
    eval_rows = concat_paired([held.head(max(1, options.analysis_tokens // max(1, options.context))), *prompt_rows],
                              tokenizers)

    t_layer = _check_layer(t_lm, default_teacher_layer(t_lm.adapter.n_layers) if options.teacher_layer is None
                           else options.teacher_layer, "teacher")
    cka: list[float] = []
    if options.student_layer is None:
        s_layer, cka = match_student_layer(t_lm, s_lm, t_layer, train_rows, seed=options.seed)
    else:
        s_layer = _check_layer(s_lm, options.student_layer, "student")
    layers = (t_layer, s_layer)
    say(f"site: teacher block {t_layer}, student block {s_layer}")

    first = next(stream_pairs(t_lm, s_lm, layers, train_rows, chunk_tokens=8192))
    norms = (Normaliser.fit(first.teacher), Normaliser.fit(first.student))

    def normalised(rows: Rows) -> Callable[[], Iterator[Chunk]]:
        def gen() -> Iterator[Chunk]:
            for c in stream_pairs(t_lm, s_lm, layers, rows):
                yield Chunk(norms[0](c.teacher), norms[1](c.student), c.where)
        return gen

    model = CrossCoder(t_lm.adapter.d_model, s_lm.adapter.d_model, options.n_latents, options.k, seed=options.seed)
    lr = options.lr if options.lr is not None else default_lr(max(t_lm.adapter.d_model, s_lm.adapter.d_model))
    settings = TrainSettings(n_latents=options.n_latents, k=options.k, n_tokens=options.n_tokens,
                             batch_size=options.batch_size, lr=lr, k_aux=options.k_aux,
                             dead_after_tokens=options.dead_after_tokens, seed=options.seed)
    torch.manual_seed(options.seed)
    log = train_crosscoder(model, kept(normalised(train_rows), options.cache_bytes), settings, device=t_lm.device)
    model.calibrate_threshold(norms[0](first.teacher).to(t_lm.device), norms[1](first.student).to(t_lm.device))
    say(f"trained: {log.steps} steps, {log.tokens} tokens, {log.tokens_per_second:,.0f} tokens/s")
    latents = analyse(model, normalised(eval_rows)())

    sites = (Site(t_lm, t_layer, norms[0], "teacher"), Site(s_lm, s_layer, norms[1], "student"))
    relevance = []
    for item, rows in zip(prepared, prompt_rows, strict=True):
        pair = (batches(item.teacher[1], t_lm.device)[0], batches(item.student[1], s_lm.device)[0])
        relevance.append(task_relevance(model, sites, pair, rows, item.name, top=options.top))
        say(f"{item.name}: relevance done")
    table = feature_table(latents, relevance)
    run_settings = dict(asdict(options), teacher=t_lm.name, student=s_lm.name, tasks=[p.name for p in prepared],
                        site={"teacher": t_layer, "student": s_layer}, student_layer_cka=cka,
                        device=str(t_lm.device), lr_used=lr, train_steps=log.steps, train_tokens=log.tokens,
                        train_seconds=log.seconds, final_mse=log.final_loss, seconds=0.0)
    info = summary(latents, relevance, table, run_settings)
    shown = _shown_latents(table, [p.name for p in prepared])
    ctx = contexts_for(shown, latents, _token_rows(eval_rows.teacher), eval_rows.source, t_lm.tokenizer)
    info["settings"]["seconds"] = time.perf_counter() - started
    results = FeatureResults(table, info, ctx, model.dec_t.detach().cpu().numpy(), model.dec_s.detach().cpu().numpy())
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        for role, norm in zip(("teacher", "student"), norms, strict=True):
            tensors[f"norm_mean_{role}"] = norm.mean.cpu().contiguous()
            tensors[f"norm_scale_{role}"] = torch.tensor(norm.scale)
        save_file(tensors, str(Path(out) / "crosscoder.safetensors"))
        results.write(Path(out))
        from circuitdiff.report.features import write_feature_page

        write_feature_page(results, Path(out))
    return results


def kept(chunks: Callable[[], Iterator[Chunk]], max_bytes: int) -> Callable[[], Iterator[Chunk]]:
    """``chunks`` whose first full pass is kept when it fits in ``max_bytes``; later passes replay it."""
    store: list[Chunk] = []
    state = {"complete": False, "over": False}

    def gen() -> Iterator[Chunk]:
        if state["complete"]:
            yield from store
            return
        size = 0
        store.clear()  # a pass abandoned half-way left a partial store
        for chunk in chunks():
            if not state["over"]:
                size += chunk.teacher.nbytes + chunk.student.nbytes + chunk.where.nbytes
                state["over"] = size > max_bytes
                store.append(chunk)
                if state["over"]:
                    store.clear()
            yield chunk
        state["complete"] = not state["over"]

    return gen


def _token_rows(rows: Rows) -> np.ndarray:
    ids = rows.input_ids.numpy().copy()
    ids[rows.attention_mask.numpy() == 0] = -1
    return ids


def _shown_latents(table: Any, tasks: list[str], per_class: int = 5) -> list[int]:
    """The latents the report shows: per task, the most relevant of each live class in either model."""
    chosen: dict[int, None] = {}
    for task in tasks:
        rows = table[table["task"] == task]
        for cls in ("teacher_only", "student_only", "shared"):
            part = rows[rows["class"] == cls]
            score = part[["effect_teacher", "effect_student"]].abs().max(axis=1)
            chosen.update(dict.fromkeys(part.loc[score.sort_values(ascending=False).index, "latent"].head(per_class)
                                        .astype(int).tolist()))
        for role in ("teacher", "student"):
            chosen.update(dict.fromkeys(headline(table, task)[role]["latents"]))
    return sorted(chosen)
