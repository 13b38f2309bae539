"""Atomic on-disk storage of finished work units (chunks), for resumable runs.

Every file is written to a temporary name in the same directory, flushed,
fsync'ed and then moved into place with :func:`os.replace` (atomic on POSIX
and Windows). A reader therefore sees either no file or a complete one: a run
killed at any instant (Ctrl-C, SIGKILL, power loss after the fsync) leaves
only complete chunks, plus possibly a stray ``.*.tmp`` file that is ignored
and cleaned up by the next run.

:class:`ChunkStore` keeps one file per key (``<key>.npz`` for dicts of arrays,
``<key>.pkl`` for arbitrary picklable values). Used by
:func:`resscale.simulate` (``out=``) and by :func:`resscale.parallel.run_tasks`.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import uuid
from pathlib import Path

import numpy as np

_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (tmp file in the same dir + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # only if os.replace did not happen
            try:
                tmp.unlink()
            except OSError:  # pragma: no cover
                pass
    return path


def write_marked_section(path, text: str, marker: str) -> Path:
    """Replace the text between ``marker`` and ``marker + " end"`` in a document (append if absent).

    Used by the validation scripts to regenerate their own table in docs/validation.md
    without touching the others; written atomically.
    """
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if marker in old:
        head, _, rest = old.partition(marker)
        _, _, tail = rest.partition(marker + " end")
        new = head + marker + "\n" + text + "\n" + marker + " end" + tail
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + marker + "\n" + text + "\n" + marker + " end\n"
    return atomic_write_bytes(path, new.encode())


def save_npz_atomic(path, arrays: dict) -> Path:
    """Save a dict of arrays (None values skipped) as an uncompressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path) -> dict:
    """Load an .npz written by :func:`save_npz_atomic` into a plain dict (fully read)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_json_atomic(path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


class ChunkStore:
    """A directory of finished chunks, one atomically written file per key.

    Parameters
    ----------
    root : path
        Directory (created if missing).
    format : {"npz", "pickle"}
        ``"npz"``: values are dicts of NumPy arrays (portable, no pickle);
        ``"pickle"``: any picklable value.
    """

    def __init__(self, root, format: str = "npz"):
        if format not in ("npz", "pickle"):
            raise ValueError(f"format must be 'npz' or 'pickle', got {format!r}")
        self.root = Path(root)
        self.format = format
        self.suffix = ".npz" if format == "npz" else ".pkl"
        self.root.mkdir(parents=True, exist_ok=True)
        for stray in self.root.glob(".*.tmp"):  # left by a killed writer
            try:
                stray.unlink()
            except OSError:  # pragma: no cover
                pass

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"chunk key must match {_KEY_RE.pattern}, got {key!r}")
        return self.root / f"{key}{self.suffix}"

    def __contains__(self, key) -> bool:
        return self.path(key).is_file()

    def keys(self):
        return sorted(p.name[: -len(self.suffix)] for p in self.root.glob(f"*{self.suffix}")
                      if not p.name.startswith("."))

    def save(self, key: str, value) -> Path:
        if self.format == "npz":
            if not isinstance(value, dict):
                raise TypeError("an npz ChunkStore stores dicts of arrays")
            return save_npz_atomic(self.path(key), value)
        return atomic_write_bytes(self.path(key), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def load(self, key: str):
        """The stored value, or None if the key is missing or its file unreadable."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            if self.format == "npz":
                return load_npz(p)
            with open(p, "rb") as f:
                return pickle.load(f)
        except Exception:  # a damaged file is treated as missing and recomputed
            return None
