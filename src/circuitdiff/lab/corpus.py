"""Plain-text training corpora: the shipped Austen sample, all of ``janeaustenr``, or a folder.

Text is split into paragraphs (blank-line separated, wrapped lines joined) because that
is the unit the data builder packs into training blocks.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path

from circuitdiff.lab.errors import CorpusError

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "pairs" / "_corpus" / "pride-and-prejudice.txt.gz"
"""Shipped with the package (under ``pairs/`` so it is package data), so CI needs no install."""

JANEAUSTENR_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")
"""Where Debian's ``r-cran-janeaustenr`` puts the six novels (an R lazy-load database)."""

DEFAULT_CORPUS = "sample"


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, wrapped lines joined, ``_italics_`` marks dropped."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        para = " ".join(line.strip() for line in block.splitlines() if line.strip())
        para = para.replace("_", "").strip()
        if para:
            paragraphs.append(para)
    return paragraphs


def _read_janeaustenr(folder: Path) -> str:
    """Decode the R lazy-load database without R, using the pure-Python ``rdata`` reader.

    ``Rdata.rdx`` (gzip) indexes ``Rdata.rdb``: per novel an (offset, length) of a chunk
    that is a 4-byte length followed by a zlib stream of an R serialisation.
    """
    try:
        import rdata
    except ImportError as exc:
        raise CorpusError("reading janeaustenr needs the 'rdata' package: pip install rdata") from exc
    rdx, rdb = folder / "Rdata.rdx", folder / "Rdata.rdb"
    if not rdx.is_file() or not rdb.is_file():
        raise CorpusError(f"janeaustenr data not found in {folder}: apt-get install r-cran-janeaustenr")
    novels = []
    with warnings.catch_warnings():  # rdata warns that a bare serialisation "assumed RDS"
        warnings.simplefilter("ignore", UserWarning)
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes())))
        blob = rdb.read_bytes()
        for name in sorted(index["variables"]):
            offset, length = (int(v) for v in index["variables"][name])
            raw = zlib.decompress(blob[offset + 4 : offset + length])
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
            novels.append("\n".join(str(line) for line in lines))
    return "\n\n".join(novels)


def load_corpus(source: str | Path = DEFAULT_CORPUS) -> list[str]:
    """Paragraphs of ``source``: "sample", "janeaustenr", a .txt(.gz) file or a folder of .txt files."""
    source_str = str(source)
    if source_str == "sample":
        text = gzip.decompress(SAMPLE_PATH.read_bytes()).decode("utf-8")
    elif source_str == "janeaustenr":
        text = _read_janeaustenr(JANEAUSTENR_DIR)
    else:
        path = Path(source_str).expanduser()
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise CorpusError(f"no .txt files in corpus folder {path}")
        elif path.is_file():
            files = [path]
        else:
            raise CorpusError(f"corpus not found: {source_str} (use 'sample', 'janeaustenr' or a folder of .txt files)")
        texts = []
        for f in files:
            data = f.read_bytes()
            if f.suffix == ".gz":
                data = gzip.decompress(data)
            texts.append(data.decode("utf-8", errors="replace"))
        text = "\n\n".join(texts)
    paragraphs = split_paragraphs(text)
    if not paragraphs:
        raise CorpusError(f"corpus {source_str} holds no text")
    return paragraphs
