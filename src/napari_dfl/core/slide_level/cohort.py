"""A cohort: slides with one label each (and a group, the patient), matched with stores.

A cohort CSV has the columns ``slide,label[,group]``. Each slide is matched with its store
in a store folder by the slide name the store records (with or without extension) or by
the store folder's prefix; the slides whose stores share the majority's extractor are the
cohort, the others are reported and left out.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from napari_dfl.core.features.store import EmbeddingStore, StoreError
from napari_dfl.core.features.store_folder import index_stores, store_extractor
from napari_dfl.core.slide_level.config import MILError
from napari_dfl.core.util.hashing import canonical_json

__all__ = ["SlideEntry", "match_stores", "read_cohort"]


@dataclass(frozen=True)
class SlideEntry:
    """One slide of a cohort: its name, store folder, label and group (patient)."""

    name: str
    store: Path
    label: str
    group: str


def read_cohort(csv_path: str | os.PathLike,
                stores_dir: str | os.PathLike) -> tuple[list[SlideEntry], list[str]]:
    """Match a cohort CSV (``slide,label[,group]``) with the stores in a folder.

    A slide matches a store by the slide name in its identity (with or without extension)
    or by the store folder's prefix. Slides without a store, with an empty or unreadable
    store, or whose extractor or embedding dimension differs from the cohort's majority are
    left out with one message each; the rest proceed.

    Returns:
        ``(entries, problems)``.

    Raises:
        MILError: the CSV is missing or lacks the ``slide`` and ``label`` columns.

    """
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except OSError as exc:
        raise MILError(f"cannot read the cohort CSV {csv_path}: {exc}.") from None
    if not {"slide", "label"} <= columns:
        raise MILError(f"{csv_path} must have a header with columns slide,label (optionally "
                       f"group); found {sorted(columns) or 'no rows'}.")
    named = []
    problems: list[str] = []
    for row in rows:
        name, label = (row.get("slide") or "").strip(), (row.get("label") or "").strip()
        if not name or not label:
            problems.append(f"row {row}: empty slide or label, skipped.")
        else:
            named.append((name, label, (row.get("group") or "").strip() or name))
    entries, more = match_stores(named, stores_dir)
    return entries, problems + more


def match_stores(slides: list[tuple[str, str, str]],
                 stores_dir: str | os.PathLike) -> tuple[list[SlideEntry], list[str]]:
    """Match ``(name, label, group)`` triples with the stores of a folder.

    A slide matches a store by the slide name in its identity (with or without extension)
    or by the store folder's prefix. Slides without a store, with an empty or unreadable
    store, or whose extractor or embedding dimension differs from the majority are left out
    with one message each.

    Returns:
        ``(entries in the order given, problems)``.

    """
    index = index_stores(stores_dir)
    problems: list[str] = []
    found: list[tuple[SlideEntry, dict]] = []
    for name, label, group in slides:
        path = index.get(name) or index.get(Path(name).stem)
        if path is None:
            problems.append(f"{name}: no store in {stores_dir} (embed it with napari-dfl "
                            "embed --out there), skipped.")
        else:
            try:
                store = EmbeddingStore.open(path)
            except StoreError as exc:
                problems.append(f"{name}: {exc} Skipped.")
                continue
            if len(store) == 0:
                problems.append(f"{name}: its store has no tissue tiles, skipped.")
                continue
            try:
                extractor = store_extractor(store)
            except StoreError as exc:
                problems.append(f"{name}: {exc} Skipped.")
                continue
            found.append((SlideEntry(name, path, label, group), (extractor, store.dim)))
    if not found:
        return [], problems
    keys = [canonical_json([ex.to_dict(), dim]) for _, (ex, dim) in found]
    majority = Counter(keys).most_common(1)[0][0]
    _, want_dim = found[keys.index(majority)][1]
    entries = []
    for (entry, (_, dim)), key in zip(found, keys, strict=True):
        if key == majority:
            entries.append(entry)
        elif dim != want_dim:
            problems.append(f"{entry.name}: embedding dimension {dim} differs from the "
                            f"cohort's {want_dim}; re-embed it with the cohort's backbone "
                            "and composition. Skipped.")
        else:
            problems.append(f"{entry.name}: embedded by another backbone or composition than "
                            "the rest of the cohort; re-embed it. Skipped.")
    return entries, problems
