"""Slide-level targets: numeric and binary columns of a cohort CSV, read and checked.

A cohort CSV for regression and multi-label learning has a ``slide`` column, optionally a
``group`` column (the patient) and one column per target: expression values or scores
(numbers) and mutation calls (``0``/``1``, ``true``/``false``, ``yes``/``no``). A column is
*binary* when every value given is one of those two-valued words (``0``/``1`` included),
else *numeric* when every value is a finite number; anything else is refused.

Which columns are targets is said by name (:func:`select_targets`, ``--targets A,B``) or by
a shell pattern (``--targets-from 'GENE_*'``). Empty cells (and ``NA``, ``NaN``, ``null``)
are missing values: by default the slide is left out of that target only (its loss and its
metrics), and the rows are named; ``missing="refuse"`` stops instead. A target whose values
are all equal, or with too few values, is refused: there is nothing to learn.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import os
from dataclasses import dataclass

import numpy as np

from napari_dfl.core.slide_level.cohort import SlideEntry, match_stores
from napari_dfl.core.slide_level.config import MILError, TargetSpec

__all__ = [
    "BINARY_WORDS",
    "MISSING_WORDS",
    "RESERVED_COLUMNS",
    "TargetCohort",
    "TargetSpec",
    "read_target_cohort",
    "select_targets",
]

#: Columns of a cohort CSV that are never targets.
RESERVED_COLUMNS = ("slide", "label", "group")
#: Cell texts read as a missing value (case-insensitive; an empty cell too).
MISSING_WORDS = frozenset({"", "na", "nan", "n/a", "null", "none"})
#: Two-valued words of a binary column, lower case, to 0 and 1.
BINARY_WORDS = {"0": 0.0, "1": 1.0, "false": 0.0, "true": 1.0, "no": 0.0, "yes": 1.0,
                "0.0": 0.0, "1.0": 1.0}
#: A target needs at least this many slides with a value.
MIN_VALUES = 4
_SHOWN = 5  # rows named in a message


@dataclass
class TargetCohort:
    """Slides matched with stores and their target values.

    Attributes:
        entries: the slides (label empty; group = patient or slide).
        targets: the targets, in output order (standardisation not fitted yet: mean 0, std 1).
        values: ``(n_slides, n_targets)`` float values, NaN where missing (binary: 0 or 1).

    """

    entries: list[SlideEntry]
    targets: list[TargetSpec]
    values: np.ndarray

    @property
    def names(self) -> list[str]:
        """Target names in output order."""
        return [t.name for t in self.targets]


def select_targets(columns: list[str], names: str | list[str] | None = None,
                   pattern: str | None = None) -> list[str]:
    """The target columns chosen by ``names`` (``"A,B"`` or a list) and/or a shell ``pattern``.

    Args:
        columns: the CSV's header.
        names: target column names.
        pattern: an ``fnmatch`` pattern (``"GENE_*"``) over the non-reserved columns.

    Returns:
        The chosen columns, in the order given (names first, then pattern matches in CSV
        order), without repeats.

    Raises:
        MILError: nothing chosen, an unknown name, a reserved column, or a pattern that
            matches no column.

    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or [])
    candidates = [c for c in columns if c not in RESERVED_COLUMNS]
    if not names and not pattern:
        raise MILError("no targets chosen: give --targets NAME[,NAME...] or --targets-from "
                       f"'PATTERN*' (the CSV's columns: {', '.join(candidates) or 'none'}).")
    reserved = [n for n in names if n in RESERVED_COLUMNS]
    if reserved:
        raise MILError(f"{', '.join(reserved)} cannot be a target (slide, label and group are "
                       "the cohort's own columns): choose other columns.")
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise MILError(f"unknown target column(s) {', '.join(unknown)}: the CSV has "
                       f"{', '.join(candidates) or 'no target columns'}. Check the spelling "
                       "(names are case-sensitive).")
    chosen = list(dict.fromkeys(names))
    if pattern:
        matched = [c for c in candidates if fnmatch.fnmatchcase(c, pattern)]
        if not matched:
            raise MILError(f"no column of the CSV matches {pattern!r} (columns: "
                           f"{', '.join(candidates) or 'none'}): check the pattern.")
        chosen += [c for c in matched if c not in chosen]
    return chosen


def _shown(lines: list[int]) -> str:
    more = f" and {len(lines) - _SHOWN} more" if len(lines) > _SHOWN else ""
    return ", ".join(str(n) for n in lines[:_SHOWN]) + more


def _parse_column(name: str, cells: list[str], lines: list[int]
                  ) -> tuple[str, np.ndarray, list[int]]:
    """Kind, values (NaN where missing) and the CSV lines of missing cells of one column."""
    texts = [c.strip() for c in cells]
    missing = [i for i, t in enumerate(texts) if t.lower() in MISSING_WORDS]
    given = [i for i, t in enumerate(texts) if t.lower() not in MISSING_WORDS]
    values = np.full(len(texts), np.nan)
    if given and all(texts[i].lower() in BINARY_WORDS for i in given):
        for i in given:
            values[i] = BINARY_WORDS[texts[i].lower()]
        return "binary", values, [lines[i] for i in missing]
    bad = []
    for i in given:
        try:
            values[i] = float(texts[i])
        except ValueError:
            bad.append(i)
            continue
        if not math.isfinite(values[i]):
            bad.append(i)
    if bad:
        examples = ", ".join(f"{texts[i]!r} on line {lines[i]}" for i in bad[:3])
        raise MILError(f"target column {name!r} holds text or non-finite values ({examples}"
                       f"{'...' if len(bad) > 3 else ''}; {len(bad)} cell(s) in all): a target "
                       "column must hold numbers, or 0/1 (true/false, yes/no) for a binary "
                       "target. Fix those cells (leave a cell empty for a missing value) or "
                       "leave the column out of the targets.")
    return "numeric", values, [lines[i] for i in missing]


def read_target_cohort(csv_path: str | os.PathLike, stores_dir: str | os.PathLike,
                       names: str | list[str] | None = None, pattern: str | None = None,
                       missing: str = "drop") -> tuple[TargetCohort, list[str]]:
    """Read a cohort CSV's target columns and match its slides with their stores.

    Args:
        csv_path: the CSV (``slide[,group],TARGET...``; a ``label`` column is ignored).
        stores_dir: the folder of the slides' stores.
        names: target columns by name (``"A,B"`` or a list).
        pattern: target columns by shell pattern (``"GENE_*"``).
        missing: ``"drop"`` (a slide without a value is left out of that target only, and
            said) or ``"refuse"`` (a missing value stops with the rows named).

    Returns:
        ``(cohort, problems)``: ``problems`` names the slides left out (no store...) and
        the missing values dropped.

    Raises:
        MILError: an unreadable CSV, no ``slide`` column, unknown or unchosen targets, a
            column with text, a target whose values are all equal or too few, missing
            values with ``missing="refuse"``, or no slide with a usable store.

    """
    if missing not in ("drop", "refuse"):
        raise MILError(f"missing must be 'drop' or 'refuse', got {missing!r}.")
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MILError(f"cannot read the cohort CSV {csv_path}: {exc}.") from None
    if "slide" not in columns:
        raise MILError(f"{csv_path} must have a header with a slide column (optionally group) "
                       f"and target columns; found {columns or 'no header'}.")
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise MILError(f"{csv_path} names the column(s) {', '.join(twice)} twice: rename one.")
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in rows]
    chosen = select_targets(columns, names, pattern)
    problems: list[str] = []
    kept, lines, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        name = (row.get("slide") or "").strip()
        if not name:
            problems.append(f"line {line}: no slide name, skipped.")
        elif name in seen:
            raise MILError(f"{csv_path} lists the slide {name!r} twice (line {line}): keep one "
                           "row per slide.")
        else:
            seen.add(name)
            kept.append(row)
            lines.append(line)
    slides = [(r["slide"].strip(), "", (r.get("group") or "").strip() or r["slide"].strip())
              for r in kept]
    entries, more = match_stores(slides, stores_dir)
    problems += more
    if not entries:
        raise MILError(f"none of the {len(kept)} slides of {csv_path} has a usable store in "
                       f"{stores_dir}: embed the slides there first (napari-dfl embed SLIDES "
                       "--out that folder) or give the folder that holds their stores.")
    where = {name: i for i, (name, _, _) in enumerate(slides)}
    used = [where[e.name] for e in entries]
    used_lines = [lines[i] for i in used]
    targets, columns_values = [], []
    for column in chosen:
        kind, values, gaps = _parse_column(column, [kept[i].get(column) or "" for i in used],
                                           used_lines)
        if gaps:
            slide_of = {lines[i]: slides[i][0] for i in used}
            text = (f"target {column!r} has no value on CSV line(s) {_shown(gaps)} (slide(s) "
                    f"{_shown([slide_of[g] for g in gaps])})")
            if missing == "refuse":
                raise MILError(f"{text}: fill those cells, or pass --missing drop to leave "
                               f"those slides out of {column!r} only.")
            problems.append(f"{text}: those slides are left out of {column!r} only (its loss "
                            "and its metrics); the other targets keep them.")
        given = values[np.isfinite(values)]
        if len(given) < MIN_VALUES:
            raise MILError(f"target {column!r} has a value on only {len(given)} slide(s) with "
                           f"a store: at least {MIN_VALUES} are needed. Fill its cells or leave "
                           "it out of the targets.")
        if np.all(given == given[0]):
            raise MILError(f"target {column!r} has the same value ({given[0]:g}) on every one "
                           f"of its {len(given)} slides with a store: there is nothing to "
                           "learn. Leave it out of the targets.")
        targets.append(TargetSpec(column, kind))
        columns_values.append(values)
    return TargetCohort(entries, targets, np.stack(columns_values, 1)), problems
