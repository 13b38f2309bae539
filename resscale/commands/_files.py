"""One reader for the array files the sub-commands take (data X, kernels K0): .npy, .csv, .txt.

Every failure is a ``ValueError`` whose message starts with the option's name, so the commands can
print it as a one-line error (exit code 2) instead of a NumPy traceback.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _one_of(suffixes: Sequence[str]) -> str:
    s = list(suffixes)
    return s[0] if len(s) == 1 else ", ".join(s[:-1]) + " or " + s[-1]


def read_array(path, name: str, suffixes: Optional[Sequence[str]] = (".npy", ".csv", ".txt"),
               csv_header: bool = False) -> np.ndarray:
    """Read a float array from ``path`` for the option ``name`` (e.g. ``"--data"``).

    .npy: ``np.load`` without pickles. .csv: comma-separated (with ``csv_header``, one header line
    may precede the numbers). Any other suffix (.txt, or anything when ``suffixes`` is None):
    whitespace-separated, or comma-separated when the text has commas. ``suffixes`` lists the
    accepted file types (None: any). Returns a 2-d array for text files (``ndmin=2``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: file not found: {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise ValueError(f"{name}: expected a {_one_of(suffixes)} file, got {str(path)!r}")
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{name}: cannot read {str(path)!r} as .npy: {exc}") from None
    try:
        delimiter = "," if suffix == ".csv" or "," in path.read_text() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: cannot read {str(path)!r}: {exc}") from None
    err = None
    for skip in ((0, 1) if csv_header and suffix == ".csv" else (0,)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.loadtxt(path, delimiter=delimiter, dtype=float, skiprows=skip, ndmin=2)
        except ValueError as exc:
            err = exc
    kind = "numeric CSV" if suffix == ".csv" else "numeric text"
    raise ValueError(f"{name}: cannot read {str(path)!r} as {kind}: {err}") from None
