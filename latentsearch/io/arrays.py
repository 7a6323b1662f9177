"""The one .npy / .npz loader: plain numeric arrays only, pickled objects refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentsearch.errors import CorruptCollection, InvalidInput

__all__ = ["load_npy"]


def load_npy(
    path: Path, *, mmap: bool = False, stored: bool = False
) -> np.ndarray | np.lib.npyio.NpzFile:
    """The array in ``path`` (memory-mapped if ``mmap``; an ``NpzFile`` for .npz), never
    unpickling. Errors are ``InvalidInput`` for a user's file and ``CorruptCollection`` for
    a file of a collection (``stored``)."""
    error = CorruptCollection if stored else InvalidInput
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise error(f"{path} is missing" if stored else f"no such file: {path}") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise error(f"{path} is not a plain .npy array: it holds pickled Python objects, "
                        "which are never loaded; save a plain numeric array instead") from None
        raise error(f"{path} is not a plain .npy array: {str(exc).splitlines()[0]}") from None
    except (OSError, EOFError) as exc:
        raise error(f"{path} is not a readable numpy file: {str(exc).splitlines()[0]}") from None
