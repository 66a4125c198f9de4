"""The parse store: captions parsed once, kept as Arrow columns of token attributes beside their ids.

A parse depends on the caption and the spaCy pipeline only, so ``hardneg parse`` (``pipeline.parse``)
writes it once and every ``hardneg generate --parsed DIR`` (any families, floors, ``k``, seed)
reads it instead of parsing again. This module is the store's format: its key, writing one part,
opening a store and looking captions up by id.

Layout of a store folder::

    store.json          the store manifest, written last: its presence means the store is complete
    part-00000.arrow    Arrow IPC files, one record batch each: ``id``, ``caption`` and one list
    part-00001.arrow    column per token attribute (:data:`TOKEN_COLUMNS`), in source order
    index.npy           the ids' 8-byte hashes, sorted, with each one's position in the store

Invariants:

- A store is keyed (:func:`store_key`) by the sha256 fingerprint of its source's bytes, the spaCy
  pipeline's name and version, spaCy's version, the disabled components and the batch size: what
  decides a parse. :func:`open_store` refuses a store whose key differs from the run's, naming the
  keys that differ.
- The token table a store gives back for a caption equals, field for field, the one
  :func:`pipeline.rules.syntax.tokens_of` reads from the parse it was written from; so output
  generated from a store is byte-identical to output that parsed inline.
- A lookup checks each record's id and caption against the stored ones: a caption the store lacks,
  or holds with another text, is an error naming the id, never a silent re-parse or a wrong parse.
- A reader memory-maps the parts and the index (no copy per process); it holds, besides the pages
  it touches, the decoded strings of the parts it has read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ParseConfig
from pipeline.core.errors import ConfigError, HardnegError
from pipeline.nlp import model_version
from pipeline.rules.syntax import Tok

log = logging.getLogger(__name__)

#: version of the store's layout and columns; a store of another version is refused
STORE_VERSION = 1
STORE_FILE = "store.json"
INDEX_FILE = "index.npy"
#: the token attributes kept per caption, as list columns (``Tok``'s fields but ``i``)
TOKEN_COLUMNS = ("text", "ws", "lower", "pos", "tag", "dep", "head", "lemma", "idx")
_STRING_COLUMNS = ("text", "lower", "pos", "tag", "dep", "lemma")
#: the key fields, in the order their differences are reported
KEY_FIELDS = ("source_fingerprint", "spacy_model", "spacy_model_version", "spacy_version", "disable", "batch_size",
              "store_version")
_new_tok = tuple.__new__


class StoreError(HardnegError):
    """A parse store is missing, incomplete, damaged or lacks a caption; the message says which."""


def store_key(source_fingerprint: str, model: str, model_version: str, spacy_version: str,
              disable: Sequence[str], batch_size: int) -> dict[str, Any]:
    """What decides the parses of a store (its identity)."""
    return {
        "source_fingerprint": source_fingerprint,
        "spacy_model": model,
        "spacy_model_version": model_version,
        "spacy_version": spacy_version,
        "disable": sorted(disable),
        "batch_size": int(batch_size),
        "store_version": STORE_VERSION,
    }


def parse_key(source_fingerprint: str, model: str, parse_cfg: ParseConfig) -> dict[str, Any]:
    """The key of a store of this source parsed with the installed ``model`` and ``parse_cfg``."""
    return store_key(source_fingerprint, model, model_version(model), model_version("spacy"), parse_cfg.disable,
                     parse_cfg.batch_size)


def open_store(folder: str | Path, source_fingerprint: str, model: str, parse_cfg: ParseConfig) -> "ParseStore":
    """The store in ``folder``, refused unless it is complete and its key is this run's."""
    store = ParseStore(folder)
    check_key(folder, store.key, parse_key(source_fingerprint, model, parse_cfg))
    return store


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def id_hash(record_id: str) -> int:
    """The 8-byte hash of an id that the index sorts by."""
    d = hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=8, key=b"hardneg-parsestore")
    return int.from_bytes(d.digest(), "big")


def part_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


# --------------------------------------------------------------------------- writing


def _schema() -> Any:
    import pyarrow as pa

    s = pa.string()
    fields = [pa.field("id", s), pa.field("caption", s)]
    for name in TOKEN_COLUMNS:
        typ = pa.bool_() if name == "ws" else pa.int32() if name in ("head", "idx") else s
        fields.append(pa.field(name, pa.list_(typ)))
    return pa.schema(fields, metadata={"hardneg_parsestore_version": str(STORE_VERSION)})


def part_table(ids: Sequence[str], captions: Sequence[str],
               tables: Iterable[tuple[tuple[Tok, ...], Any]]) -> Any:
    """The Arrow table of one part: each caption's token table as list columns."""
    import pyarrow as pa

    cols: dict[str, list[list[Any]]] = {name: [] for name in TOKEN_COLUMNS}
    for toks, _children in tables:
        cols["text"].append([t.text for t in toks])
        cols["ws"].append([t.ws == " " for t in toks])
        cols["lower"].append([t.lower for t in toks])
        cols["pos"].append([t.pos for t in toks])
        cols["tag"].append([t.tag for t in toks])
        cols["dep"].append([t.dep for t in toks])
        cols["head"].append([t.head for t in toks])
        cols["lemma"].append([t.lemma for t in toks])
        cols["idx"].append([t.idx for t in toks])
    data = {"id": list(ids), "caption": list(captions), **cols}
    return pa.Table.from_pydict(data, schema=_schema())


def write_part(table: Any, path: str | Path) -> dict[str, Any]:
    """Write one part atomically (uncompressed Arrow IPC, so readers memory-map it); returns its
    rows, bytes and sha256."""
    import pyarrow as pa

    from pipeline.core.atomic import atomic_path, sha256_file

    path = Path(path)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(1, table.num_rows))
    return {"rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_index(hashes: np.ndarray, path: str | Path) -> None:
    """The index: ``hashes[g]`` is the id hash of the store's ``g``-th caption; written as a
    ``(2, n)`` uint64 array of the hashes, sorted, and their positions. Two equal hashes (a
    duplicate id) are an error."""
    from pipeline.core.atomic import atomic_path

    order = np.argsort(hashes, kind="stable")
    keys = hashes[order]
    if len(keys) > 1 and bool((keys[1:] == keys[:-1]).any()):
        at = int(np.flatnonzero(keys[1:] == keys[:-1])[0])
        raise StoreError(f"two captions of the source share an id hash (positions {int(order[at])} and "
                         f"{int(order[at + 1])}): ids must be unique, check source.id_column")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack([keys, order.astype(np.uint64)]))


# --------------------------------------------------------------------------- reading


def read_store_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / STORE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{folder} is not a complete parse store (no {STORE_FILE}); build it with `hardneg parse`") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from None
    if data.get("key", {}).get("store_version") != STORE_VERSION:
        raise StoreError(f"{path}: parse store version {data.get('key', {}).get('store_version')!r}, this hardneg "
                         f"reads version {STORE_VERSION}; rebuild it with `hardneg parse`")
    return data


def check_key(folder: str | Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse a store whose key differs from the run's, naming every field that differs."""
    diffs = [f"{k}: store {found.get(k)!r}, run {wanted.get(k)!r}" for k in KEY_FIELDS if found.get(k) != wanted.get(k)]
    if diffs:
        hint = ("the source changed or is another one" if found.get("source_fingerprint") != wanted.get("source_fingerprint")
                else "it was parsed with other spaCy settings")
        raise ConfigError(f"parse store {folder} does not match this run ({hint}): " + "; ".join(diffs)
                          + "; rebuild it with `hardneg parse`, or leave out `parsed`")


class ParseStore:
    """An opened parse store: token tables looked up by record id (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = read_store_manifest(self.folder)
        self.key: dict[str, Any] = self.manifest["key"]
        self.part_size = int(self.manifest["part_size"])
        self.parts: list[dict[str, Any]] = self.manifest["parts"]
        try:
            index = np.load(self.folder / INDEX_FILE, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read the index of parse store {self.folder}: {e}") from None
        if index.shape != (2, int(self.manifest["captions"])):
            raise StoreError(f"parse store {self.folder}: the index does not list its {self.manifest['captions']} captions")
        self._keys, self._pos = index[0], index[1]
        self._tables: dict[int, Any] = {}

    @property
    def model_info(self) -> dict[str, Any]:
        """The spaCy pipeline that parsed the store (as ``pipeline.nlp.model_info`` gives it)."""
        return dict(self.manifest["model_info"])

    def _part(self, p: int) -> Any:
        t = self._tables.get(p)
        if t is None:
            import pyarrow as pa

            path = self.folder / self.parts[p]["path"]
            try:
                t = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            except (OSError, pa.ArrowInvalid) as e:
                raise StoreError(f"cannot read parse store part {path}: {e}") from None
            self._tables[p] = t
        return t

    def locate(self, ids: Sequence[str]) -> np.ndarray:
        """Each id's position in the store; an id it lacks is an error naming it."""
        h = np.fromiter((id_hash(i) for i in ids), dtype=np.uint64, count=len(ids))
        at = np.searchsorted(self._keys, h)
        at_c = np.minimum(at, max(len(self._keys) - 1, 0))
        found = (at < len(self._keys)) & (self._keys[at_c] == h) if len(self._keys) else np.zeros(len(h), bool)
        if not found.all():
            missing = ids[int(np.flatnonzero(~found)[0])]
            raise StoreError(f"parse store {self.folder} has no caption with id {missing!r} "
                             f"({int((~found).sum())} of {len(ids)} missing); was it built from this source?")
        return np.asarray(self._pos[at_c], dtype=np.int64)

    def tables(self, ids: Sequence[str], captions: Sequence[str]) -> list[tuple[tuple[Tok, ...], tuple[tuple[int, ...], ...]]]:
        """The token table and children of each caption, in the order given."""
        pos = self.locate(ids)
        out: list[Any] = [None] * len(ids)
        parts = pos // self.part_size
        for p in np.unique(parts).tolist():
            which = np.flatnonzero(parts == p)
            rows = pos[which] - p * self.part_size
            decoded = _decode(self._part(p).take(rows))
            for j, (rid, text, toks, children) in zip(which.tolist(), decoded):
                if rid != ids[j] or text != captions[j]:
                    raise StoreError(f"parse store {self.folder} holds id {ids[j]!r} with another caption "
                                     f"({text!r:.60} , not {captions[j]!r:.60}); was it built from this source?")
                out[j] = (toks, children)
        return out


def _strings(arr: Any) -> list[str]:
    """A flat string column as Python strings (each distinct string one object)."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(arr)
    vocab = enc.dictionary.to_pylist()
    return list(map(vocab.__getitem__, enc.indices.to_numpy(zero_copy_only=False).tolist()))


def _decode(table: Any) -> list[tuple[str, str, tuple[Tok, ...], tuple[tuple[int, ...], ...]]]:
    """``(id, caption, token table, children)`` per row of a part's table."""
    table = table.combine_chunks()
    first = table.column("text").chunk(0) if table.num_rows else None
    if first is None:
        return []
    lengths = first.value_lengths().to_numpy(zero_copy_only=False)
    flat = {name: table.column(name).chunk(0).flatten() for name in TOKEN_COLUMNS}
    cols: dict[str, list[Any]] = {name: _strings(flat[name]) for name in _STRING_COLUMNS}
    ws = [" " if w else "" for w in flat["ws"].to_pylist()]
    heads = flat["head"].to_numpy(zero_copy_only=False).tolist()
    idx = flat["idx"].to_numpy(zero_copy_only=False).tolist()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    index = (np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)).tolist()
    toks = [_new_tok(Tok, t) for t in zip(index, cols["text"], ws, cols["lower"], cols["pos"], cols["tag"],
                                           cols["dep"], heads, cols["lemma"], idx)]
    out = []
    ids = table.column("id").to_pylist()
    caps = table.column("caption").to_pylist()
    s = 0
    for rid, cap, n in zip(ids, caps, lengths.tolist()):
        mine = tuple(toks[s : s + n])
        s += n
        children: list[list[int]] = [[] for _ in range(n)]
        for t in mine:
            if t.head != t.i:
                children[t.head].append(t.i)
        out.append((rid, cap, mine, tuple(map(tuple, children))))
    return out
