"""The collection store: a collection is a folder of plain files, written crash-safely.

A collection is a folder::

    manifest.json    format_version, settings, count, next_id, and every file with its sha256
    vectors.npy      float32 (n, dim), the source of truth (unit rows for metric cosine)
    ids.npy          int64 (n,), ascending, stable for the life of the collection
    index.faiss      the FAISS index (IVF keeps the ids itself, others are IDMap-wrapped)
    records.sqlite   id, label, source, text, extra (JSON)
    images.npy       uint8 (n, H, W, C), image collections only: the pixels as encoded
    encoder/         the encoder's own files (model.keras, vocabulary, ...)
    delta-NNNNNN-*   delta segments: the vectors, ids, records (and images) of recent adds,
                     listed in the manifest's ``deltas`` (see ``latentsearch.collection``)
    removed-NNNNNN.npy  ids removed from the main segment but still in its files and index

Writes are crash-safe. A fresh build is written whole into a hidden sibling folder, fsynced,
and renamed into place. A later write (add, remove, compact) writes what it changes as new
files - a delta segment, or main parts under generation names (``vectors-000002.npy``) -
inside a staging folder, fsyncs and renames them in, then replaces manifest.json atomically
(the commit point), and only then deletes the files the new manifest no longer names. A
crash before the manifest is replaced leaves the old collection intact plus stray files
that the next writer deletes.

One writer at a time holds an advisory ``flock`` on ``.lock`` (released by the kernel when a
process dies, so a killed writer never leaves a stale lock). Readers take no lock.
Nothing here unpickles: arrays load with ``allow_pickle=False``, the rest is JSON and SQLite.

Modules: ``paths`` (where collections live, names), ``manifest`` (reading, checking and
writing manifest.json), ``files`` (checksums, staging, commit, clean-up), ``records`` (the
SQLite records file), ``lock`` (the writer lock), ``durable`` (fsync and the crash hook).
"""
