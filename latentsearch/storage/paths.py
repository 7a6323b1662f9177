"""Where collections live: the root folder, collection names, finding a collection."""

from __future__ import annotations

import os
import re
from pathlib import Path

from latentsearch.errors import CollectionNotFound, InvalidInput
from latentsearch.storage.manifest import MANIFEST

__all__ = ["resolve_root", "check_name", "locate"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")



def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$LATENTSEARCH_ROOT``, else ``./indexes``."""
    return Path(root or os.environ.get("LATENTSEARCH_ROOT") or "indexes")


def check_name(name: str) -> str:
    """A collection name must be a plain folder name: no separators, no leading dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidInput(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no paths)"
        )
    return name


def locate(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The folder of an existing collection: a name under the root, or a path to a folder."""
    text = os.fspath(name_or_path)
    root_path = resolve_root(root)
    candidates = []
    if _NAME_RE.match(text):
        candidates.append(root_path / text)
    if os.sep in text or text.startswith(".") or not candidates:
        candidates.append(Path(text))
    for i, folder in enumerate(candidates):
        if (folder / MANIFEST).is_file():
            if i == 0 and _NAME_RE.match(text) and not _within(folder, root_path):
                raise InvalidInput(
                    f"collection {text!r} is a link out of the root {root_path}; "
                    "open it by its real path instead"
                )
            return folder
    raise CollectionNotFound(
        f"no collection {text!r} (looked in {', '.join(str(c) for c in candidates)}); "
        "`latentsearch list` shows what exists"
    )


def _within(folder: Path, root: Path) -> bool:
    try:
        folder.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
