"""``circuitdiff features`` on two models that tokenise differently: positions paired at common token ends.

Ground truth written here with the tokenizers and plain Hugging Face forwards:
- one tokenizer for both: the paired rows are today's rows, every real position but a row's first with itself,
  and the streamed activations equal the HF hidden states at those positions bit for bit;
- GPT-2's BPE against BERT's WordPiece: every paired teacher and student token end at the same character (the
  text read, trailing whitespace aside, from each tokenizer's own offsets), every such common end is paired, and
  no special token or [MASK] is;
- end to end: tiny-gpt2 against tiny-distilbert (a masked LM with another vocabulary) runs, and tiny-gpt2
  against itself under a second, finer tokenizer (the same vocabulary with half its BPE merges) has almost no
  exclusive latents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from circuitdiff.features import FeatureOptions, features
from circuitdiff.features.activations import paired_text_rows, stream_pairs, text_rows
from circuitdiff.lab.corpus import load_corpus
from circuitdiff.models.loading import LoadedModel, from_hugging_face, load_model

TEXTS = [
    "Elizabeth was  delighted with the unexpected civility of Mr. Darcy, wasn't she?",
    "The café served crème brûlée 😀 to   forty-two guests;\n\nnobody complained.",
    "Unbelievably, 1234 zebras (and 56 more) jumped over Mary's lazy dog!",
]


@pytest.fixture(scope="module")
def teacher(one_torch_thread) -> LoadedModel:  # noqa: ANN001
    return load_model("tiny-gpt2")


def test_one_tokenizer_pairs_every_position_with_itself_as_before(teacher: LoadedModel) -> None:
    paragraphs = load_corpus("sample")[:300]
    paired = paired_text_rows(paragraphs, (teacher.tokenizer, teacher.tokenizer), 32)
    rows = text_rows(paragraphs, teacher.tokenizer, 32)
    for side in (paired.teacher, paired.student):
        assert torch.equal(side.input_ids, rows.input_ids) and torch.equal(side.attention_mask, rows.attention_mask)
    mask = rows.token_mask()
    where = mask.nonzero()
    assert torch.equal(paired.pairs, torch.cat([where, where[:, 1:]], 1))
    chunks = list(stream_pairs(teacher, teacher, (3, 3), paired, chunk_tokens=4096))
    got = [torch.cat([getattr(c, a) for c in chunks]) for a in ("teacher", "student", "where")]
    expected = []
    with torch.no_grad():
        for start in range(0, len(rows), 32):  # the old stream: 32 rows a forward, cut to their longest row
            att = rows.attention_mask[start:start + 32]
            width = int(att.sum(1).max())
            hidden = teacher.model.transformer(rows.input_ids[start:start + 32, :width], attention_mask=att[:, :width],
                                               output_hidden_states=True).hidden_states[4]
            expected.append(hidden[mask[start:start + 32, :width]])
    expected = torch.cat(expected)
    assert torch.equal(got[0], expected) and torch.equal(got[1], expected)
    assert torch.equal(got[2], where)


def _read_to(text: str, end: int) -> int:
    """How much text a token ending at ``end`` has read, trailing whitespace aside."""
    return len(text[:end].rstrip())


def test_gpt2_and_bert_tokens_pair_where_both_end_at_one_character() -> None:
    gpt2 = AutoTokenizer.from_pretrained("tests/assets/gpt2-tokenizer")
    bert = AutoTokenizer.from_pretrained("tests/assets/bert-tokenizer")
    paired = paired_text_rows(TEXTS, (gpt2, bert), 128)
    assert len(paired) == len(TEXTS)  # one row per text: row positions are the text's tokens
    for r, text in enumerate(TEXTS):
        t_enc, s_enc = (tok(text, add_special_tokens=False, return_offsets_mapping=True) for tok in (gpt2, bert))
        assert paired.teacher.input_ids[r, :len(t_enc["input_ids"])].tolist() == t_enc["input_ids"]
        assert paired.student.input_ids[r, :len(s_enc["input_ids"])].tolist() == s_enc["input_ids"]
        t_ends = [_read_to(text, b) for _a, b in t_enc["offset_mapping"]]
        s_ends = [_read_to(text, b) for _a, b in s_enc["offset_mapping"]]
        pairs = paired.pairs[paired.pairs[:, 0] == r, 1:].tolist()
        assert pairs and all(t_ends[i] == s_ends[j] for i, j in pairs)
        # every end both tokenisations share is paired once, but the rows' first tokens' (left out: a sink)
        common = (set(t_ends) & set(s_ends)) - {t_ends[0], s_ends[0]}
        assert sorted(t_ends[i] for i, _ in pairs) == sorted(common)
    emoji = TEXTS[1].index("😀") + 1  # GPT-2's byte pieces of the emoji end where BERT's [UNK] does: paired
    assert bert.unk_token_id in paired.student.input_ids[1]
    assert any(_read_to(TEXTS[1], b) == emoji for b in (o[1] for o in gpt2(TEXTS[1], return_offsets_mapping=True)
                                                         ["offset_mapping"][1:]))
    # GPT-2 splits "Unbelievably" where BERT does not: its inner pieces end inside BERT's token and stay unpaired
    third = paired.pairs[paired.pairs[:, 0] == 2, 1].tolist()
    assert len(third) < int(paired.teacher.attention_mask[2].sum()) - 1


def test_masked_prompts_pair_only_the_text_both_read(teacher: LoadedModel) -> None:
    from circuitdiff.features.run import _task_rows

    student = load_model("tiny-distilbert")
    _, (rows,) = _task_rows(teacher, student, ["ioi"], FeatureOptions(n_prompts=8))
    specials = set(student.tokenizer.all_special_ids)
    for r, i, j in rows.pairs.tolist():
        t_word = teacher.tokenizer.decode([int(rows.teacher.input_ids[r, i])]).strip().lower()
        s_piece = student.tokenizer.convert_ids_to_tokens(int(rows.student.input_ids[r, j]))
        assert int(rows.student.input_ids[r, j]) not in specials  # [CLS], [SEP] and [MASK] have no text span
        assert t_word.endswith(s_piece.removeprefix("##")), (t_word, s_piece)
    mask_pos = (rows.student.input_ids == student.tokenizer.mask_token_id).nonzero()
    assert len(mask_pos) == len(rows)


def test_cli_runs_on_a_pair_with_two_vocabularies(tmp_path) -> None:  # noqa: ANN001
    from circuitdiff.cli.main import _mount_features, run_app

    _mount_features()
    args = ["features", "--teacher", "tiny-gpt2", "--student", "tiny-distilbert", "-t", "ioi", "--site",
            "teacher:3,student:1", "--n-latents", "64", "--k", "4", "--n-tokens", "20000", "--n-prompts", "8",
            "--top", "4", "--out", str(tmp_path)]
    assert run_app(args) == 0
    summary = json.loads((tmp_path / "features.json").read_text())
    assert sum(summary["counts"].values()) == 64 and summary["fve"]["student"] > 0.3
    ioi = summary["tasks"]["ioi"]
    assert max(ioi["identity_gap"].values()) < 1e-4  # the splice with its error term is each model itself
    # the student's [MASK] is never paired: its context positions are, and reach it through the block after the site
    assert ioi["spliced"]["student"] != ioi["clean"]["student"]


def test_no_common_boundary_is_refused_in_one_line(teacher: LoadedModel, tmp_path, capsys) -> None:  # noqa: ANN001
    from circuitdiff.cli.main import _mount_features, run_app

    words = ["observation", "connections", "accordingly"]  # one word a paragraph: tiny-distilbert reads each as one
    bert = load_model("tiny-distilbert").tokenizer  # token, tiny-gpt2 splits it; the only common end is then the
    assert all(len(bert.tokenize(w)) == 1 < len(teacher.tokenizer.tokenize(w)) for w in words)  # student's first
    corpus = tmp_path / "words.txt"
    corpus.write_text("\n\n".join(words * 10))
    _mount_features()
    assert run_app(["features", "--teacher", "tiny-gpt2", "--student", "tiny-distilbert", "-t", "ioi",
                    "--corpus", str(corpus), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no token boundary in common" in " ".join(err.split()) and "Traceback" not in err


def _finer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same vocabulary with the later half of its BPE merges dropped: the same model reads finer tokens."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["model"]["merges"] = spec["model"]["merges"][:len(spec["model"]["merges"]) // 2]
    finer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    finer.pad_token, finer.eos_token = tokenizer.pad_token, tokenizer.eos_token
    return finer


def test_a_model_against_itself_under_a_second_tokenizer_shares_its_latents(teacher: LoadedModel) -> None:
    finer = _finer(teacher.tokenizer)
    sample = "Elizabeth was delighted with the unexpected civility"
    assert len(finer.tokenize(sample)) > len(teacher.tokenizer.tokenize(sample))
    student = from_hugging_face(teacher.model, finer, "tiny-gpt2 (finer tokens)")
    options = FeatureOptions(n_latents=128, k=8, n_tokens=300 * 256, batch_size=256, context=32,
                             analysis_tokens=6000, corpus_tokens=20_000, n_prompts=8, top=8, seed=0,
                             teacher_layer=3, student_layer=3)
    result = features(teacher, student, ["ioi"], None, options)
    live = result.table[(result.table["task"] == "ioi") & (result.table["class"] != "dead")]
    assert len(live) >= 16
    assert live["class"].isin(["teacher_only", "student_only"]).mean() <= 0.05
    assert min(result.summary["fve"].values()) > 0.5



def test_cuts_move_back_to_a_common_start_and_groups_pair_by_rule() -> None:
    from circuitdiff.features.pairing import cut_rows, pair_by_ends

    text = "abcdefgh"
    t_spans = np.array([(0, 2), (2, 4), (4, 6), (6, 8)])  # the student's (2, 5) and (5, 8) straddle the teacher's
    s_spans = np.array([(0, 2), (2, 5), (5, 8)])  # cuts at 4 and 6: the 3-token row is cut back to where both start
    rows = cut_rows(t_spans, s_spans, text, (3, 3))
    assert rows == [(slice(0, 1), slice(0, 1), True), (slice(1, 4), slice(1, 3), True)]
    assert pair_by_ends(t_spans[1:4], s_spans[1:3]) == [(2, 1)]  # only "h" ends both; 4 and 6 end inside (2, 5)
    # no cut can align: the student's single token straddles every teacher start, so the next row pairs nothing
    assert cut_rows(t_spans, np.array([(0, 8)]), text, (2, 2))[1][2] is False
    # a word and a whitespace token ending with it against the word alone: the word pairs with the word
    assert pair_by_ends(np.array([(0, 5), (5, 5)]), np.array([(0, 5)])) == [(0, 0)]
    # as many tokens ending at one character on both sides (byte pieces of one emoji): paired in order
    assert pair_by_ends(np.array([(0, 1), (0, 1)]), np.array([(0, 1), (0, 1)])) == [(0, 0), (1, 1)]
    # special tokens and padding have no span; text past ``limit`` (after a [MASK]) is not paired
    assert pair_by_ends(np.array([(-1, -1), (0, 3), (4, 9)]), np.array([(0, 3), (4, 9)]), limit=5) == [(1, 0)]


def test_a_task_multi_token_for_one_tokenizer_only_splices_both_models(teacher: LoadedModel) -> None:
    from circuitdiff.features.run import _task_rows

    finer = from_hugging_face(teacher.model, _finer(teacher.tokenizer), "tiny-gpt2 (finer tokens)")
    options = FeatureOptions(n_latents=32, k=4, n_tokens=5000, batch_size=256, context=32, analysis_tokens=1000,
                             corpus_tokens=3000, n_prompts=8, top=4, seed=0, teacher_layer=3, student_layer=3)
    prepared, _ = _task_rows(finer, teacher, ["facts"], options)
    assert (prepared[0].teacher[1].branches, prepared[0].student[1].branches) == (2, 1)  # the premise
    facts = features(finer, teacher, ["facts"], None, options).summary["tasks"]["facts"]
    assert max(facts["identity_gap"].values()) < 1e-4
