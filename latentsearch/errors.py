"""The one exception tree of latentsearch.

Every error the library raises on purpose derives from :class:`LatentSearchError`, and each
also derives from the builtin it resembles, so ``except FileNotFoundError`` keeps working::

    LatentSearchError
    ├── CollectionNotFound    (FileNotFoundError)  no collection by that name or path
    ├── CollectionExists      (FileExistsError)    build over an existing collection
    ├── CorruptCollection     (ValueError)         missing file, bad checksum, bad manifest
    ├── UnsupportedFormat     (ValueError)         written by a newer format_version
    ├── CollectionLocked      (BlockingIOError)    another writer holds the lock
    ├── InvalidInput          (ValueError)         NaN/inf, empty input, bad source, bad option
    │   ├── DimensionMismatch (ValueError)         a vector or image of the wrong shape
    │   └── IndexSpecError    (ValueError)         an index spec FAISS cannot build
    ├── UnknownId             (KeyError)           an id the collection does not hold
    ├── EncoderError          (RuntimeError)       no encoder, or it cannot encode this input
    └── ClusterError          (RuntimeError)       Ray missing or unreachable, a worker lost for good

The command line prints ``error: <message>`` for any of them and exits with status 1.
"""

from __future__ import annotations

__all__ = [
    "LatentSearchError",
    "CollectionNotFound",
    "CollectionExists",
    "CorruptCollection",
    "UnsupportedFormat",
    "CollectionLocked",
    "InvalidInput",
    "DimensionMismatch",
    "IndexSpecError",
    "UnknownId",
    "EncoderError",
    "ClusterError",
]


class LatentSearchError(Exception):
    """Base of every error latentsearch raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class CollectionNotFound(LatentSearchError, FileNotFoundError):
    """No collection exists under that name or path."""


class CollectionExists(LatentSearchError, FileExistsError):
    """A build would overwrite an existing collection."""


class CorruptCollection(LatentSearchError, ValueError):
    """A collection file is missing, truncated, or fails its checksum."""


class UnsupportedFormat(LatentSearchError, ValueError):
    """The collection was written by a newer format_version than this package reads."""


class CollectionLocked(LatentSearchError, BlockingIOError):
    """Another process holds the collection's writer lock."""


class InvalidInput(LatentSearchError, ValueError):
    """Input the library refuses: NaN/inf, empty, unreadable or out of range."""


class DimensionMismatch(InvalidInput):
    """A vector or image does not have the collection's dimension or shape."""


class IndexSpecError(InvalidInput):
    """An index spec that is unknown or that FAISS cannot build."""


class UnknownId(LatentSearchError, KeyError):
    """An id the collection does not hold (never given, or removed)."""


class EncoderError(LatentSearchError, RuntimeError):
    """The collection has no encoder for this input, or the encoder cannot encode it."""


class ClusterError(LatentSearchError, RuntimeError):
    """Ray is not installed or not reachable, or a worker died more times than it is retried."""
