"""Settings chosen on the user's own labels: embed with each candidate, probe, rank.

Each candidate backbone embeds the same labelled samples (into the shared stores, so a
rerun or a later ``train`` reuses them); a linear probe is cross-validated with grouped
folds; the ranking and its table, CSV and chart come from
:mod:`napari_dfl.core.heads.selection`. :func:`compare_settings` ranks backbones x fields of
view x {with, without x5 context} x {with, without grayscale}: one extraction per backbone
and field, the smaller compositions cut from it (:mod:`napari_dfl.core.features.parts`).

What is suggested is :func:`~napari_dfl.core.heads.selection.choose`'s pick: the probe's best,
or the settings in use (:func:`current_extractor`, or the panel's) when the best does not
clearly beat them. :func:`suggest_settings` is the same comparison on the annotations of one
open slide (the panel's "Suggest settings" job): the same candidates, the same probe and the
same ranking, as a job that yields events, embeds through the panel's embedder (its store
folder) and can be cancelled; its folds follow the CLI's, fewer when a class has fewer groups.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.annotations.datasets import annotation_kinds
from napari_dfl.core.annotations.samples import SampleSet
from napari_dfl.core.backbones.registry import DEFAULT_BACKBONE
from napari_dfl.core.errors import Cancelled, DFLError
from napari_dfl.core.features.engine import EmbedProgress
from napari_dfl.core.features.parts import part_columns, sub_compositions
from napari_dfl.core.features.preferred import load_preferred
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.selection import PROBE, Pick, candidate_name, choose, probe_row, rank
from napari_dfl.core.slides.sampling import Composition, default_composition
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder, ensure_embedded
from napari_dfl.workflows.jobs import Event, as_events, run
from napari_dfl.workflows.labelled import (
    LabelledEmbeddings,
    annotation_samples,
    embed_labelled,
    labelled_from_store,
)

__all__ = ["DEFAULT_FIELDS", "DEFAULT_FOLDS", "SELECT_COMPOSITION", "SuggestPlan", "Suggestion",
           "choice_record", "compare_backbones", "compare_settings", "current_extractor",
           "in_use", "kept_choice", "pick_of", "plan_suggestion", "suggest_settings"]

#: Fields of view compared by default (``napari-dfl select --fields``): a nucleus (16 µm at
#: x20), a few cells (32 µm) and a tissue tile (112 µm).
DEFAULT_FIELDS = (32, 64, 224)
#: Grouped folds by default (``napari-dfl select --folds``).
DEFAULT_FOLDS = 5
#: The fullest candidate's zooms and variants (``select``'s defaults): x20 + x5, rgb + gray,
#: the backbone's own input size; its patch size is replaced by each field compared, and the
#: panel and the CLI give it the context of the settings in use.
SELECT_COMPOSITION = Composition()

#: Embeds labelled samples with some settings, as a job (events, then the embeddings).
LabelledJob = Callable[[Settings], Generator[Event, None, LabelledEmbeddings]]


def compare_backbones(specs: Sequence[str | os.PathLike], backbones: Sequence[str],
                      settings: Settings, *, folds: int = 5,
                      on_result: Callable[[dict], None] | None = None,
                      on_progress: Callable[[EmbedProgress], None] | None = None,
                      ) -> list[dict]:
    """Cross-validate a linear probe on each backbone's embeddings of the same samples.

    A backbone that cannot be loaded (no weights offline, say) is reported with its error
    and the others go on. ``on_progress`` is called with each source's extraction progress.

    Returns:
        One row per backbone, ranked best first: ``backbone``, ``status``, ``rank``, the
        mean and sd of each metric, ``folds`` and ``error``.

    """
    from napari_dfl.core.heads.validation import cross_validate  # torch: not at import

    rows = []
    for name in backbones:
        try:
            data = embed_labelled(specs, settings.with_(backbone=name, weights=None),
                                  on_progress=on_progress)
            result = cross_validate(data.embeddings, data.labels, data.groups, PROBE,
                                    folds=folds)
            row = probe_row(name, result, data.embeddings.shape[1])
        except DFLError as exc:
            row = {"backbone": name, "status": "error", "error": str(exc)}
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rank(rows)


def _rank_candidates(embed: LabelledJob, backbones: Sequence[str], fields: Sequence[int],
                     settings: Settings, folds: int, cancel: CancelCheck | None = None,
                     ) -> Generator[Event, None, list[dict]]:
    """The comparison itself, for datasets and for a slide's annotations alike.

    Yields ``("candidate", row)`` as each row is ready (and whatever ``embed`` yields);
    returns the rows ranked. A backbone or field that cannot be embedded is an ``error``
    row and the others go on; a cancel is never taken for such an error.
    """
    # imported here: the panel imports this module, and its GUI thread never imports torch
    from napari_dfl.core.heads.validation import cross_validate

    rows: list[dict] = []
    for name in backbones:
        for field in fields:
            full = replace(settings.composition, patch_size=int(field))
            try:
                data = yield from embed(settings.with_(backbone=name, weights=None,
                                                       composition=full))
            except Cancelled:
                raise
            except DFLError as exc:
                rows.append({"candidate": f"{name}, {field} px", "backbone": name,
                             "status": "error", "error": str(exc)})
                yield "candidate", rows[-1]
                continue
            resolved = data.extractor.composition  # the input size resolved
            part_dim = data.embeddings.shape[1] // resolved.n_parts
            for sub in sub_compositions(resolved):
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled after {len(rows)} candidates; the embeddings "
                                    "computed are kept in the store folder.")
                x = data.embeddings[:, part_columns(resolved, sub, part_dim)]
                result = cross_validate(x, data.labels, data.groups, PROBE, folds=folds,
                                        cancel=cancel)
                row = probe_row(name, result, x.shape[1])
                row.update(candidate=candidate_name(name, sub), composition=sub.to_dict())
                rows.append(row)
                yield "candidate", row
    return rank(rows)


def compare_settings(specs: Sequence[str | os.PathLike], backbones: Sequence[str],
                     fields: Sequence[int], settings: Settings, *, folds: int = 5,
                     on_result: Callable[[dict], None] | None = None,
                     on_progress: Callable[[EmbedProgress], None] | None = None,
                     make_embedder: Callable[[Settings], Embedder] | None = None,
                     ) -> list[dict]:
    """Rank backbones x fields of view x context x grayscale by a grouped linear probe.

    Args:
        specs: labelled datasets (see :func:`~napari_dfl.workflows.labelled.embed_labelled`).
        backbones: backbone names.
        fields: fields of view, as patch sizes in pixels at the first zoom.
        settings: the rest (zooms and variants of the fullest candidate, input size, store
            folder, device).
        folds: grouped folds (no group on both sides).
        on_result: called with each row as it is ready.
        on_progress: called with each source's extraction progress.
        make_embedder: the embedder of each candidate's settings (default: in this process).

    Returns:
        One row per candidate, ranked best first: ``candidate``, ``backbone``,
        ``composition`` (its JSON form), the probe's metrics (see
        :func:`~napari_dfl.core.heads.selection.probe_row`); a backbone that cannot be loaded
        is one ``error`` row, and the others go on.

    """
    def embed(candidate: Settings) -> Generator[Event, None, LabelledEmbeddings]:
        yield from ()  # a job without events: progress goes to on_progress
        return embed_labelled(specs, candidate, on_progress=on_progress,
                              embedder=None if make_embedder is None
                              else make_embedder(candidate))

    def event(kind: str, payload) -> None:
        if kind == "candidate" and on_result is not None:
            on_result(payload)

    return run(_rank_candidates(embed, backbones, fields, settings, folds), event)


# -- the panel's "Suggest settings": the same comparison on one slide's annotations --------
@dataclass(frozen=True)
class SuggestPlan:
    """What :func:`suggest_settings` will compare, decided before anything is embedded.

    Attributes:
        fields: the fields of view compared (those where every class has 2 groups or more).
        folds: grouped folds: the CLI's, or the fewest groups of any class when fewer.
        samples: samples per field compared.
        notes: one sentence per field left out, and why.
        sample_sets: the samples of each field compared (what the candidates embed).

    """

    fields: tuple[int, ...]
    folds: int
    samples: dict[int, int]
    notes: tuple[str, ...] = ()
    sample_sets: dict[int, SampleSet] = dataclass_field(default_factory=dict, repr=False,
                                                        compare=False)


@dataclass(frozen=True)
class Suggestion:
    """The result of :func:`suggest_settings`.

    Attributes:
        rows: one row per candidate, ranked best first (as :func:`compare_settings`).
        plan: the fields and folds compared.
        settings: the settings the candidates were made from (backbone, store folder...).
        composition: the fullest candidate's composition (its patch size aside).
        source: the slide the annotations are on.
        current: the backbone and composition in use when the comparison started (the
            panel's settings); the suggestion keeps them unless a candidate clearly beats
            them.

    """

    rows: list[dict]
    plan: SuggestPlan
    settings: Settings
    composition: Composition
    source: str = ""
    current: tuple[str, Composition] | None = None

    @property
    def pick(self) -> Pick | None:
        """What is suggested (:func:`pick_of`), or None when no candidate was evaluated."""
        return pick_of(self.rows, self.composition, self.current)

    def choice(self) -> tuple[str, Composition] | None:
        """The suggested backbone and composition as ``select --apply`` keeps them.

        See :func:`kept_choice`; None without an evaluated candidate.
        """
        pick = self.pick
        return None if pick is None else kept_choice(pick.row, self.composition)

    def evidence(self) -> dict:
        """What chose the suggestion (``save_preferred``'s ``chosen``), or {} without one."""
        pick = self.pick
        return {} if pick is None else choice_record(
            pick.row, [f"{self.source} (the panel's annotations)"])


def in_use(backbone: str, composition: Composition, base: Composition,
           ) -> Callable[[dict], bool]:
    """Tells the row of the extractor in use among candidates made from ``base``.

    A row matches when ``select --apply`` would keep exactly ``backbone`` and
    ``composition`` from it (:func:`kept_choice`): same field, zooms, variants, context and
    input size ("the backbone's own" matching a base that left it so).
    """
    def matches(row: dict) -> bool:
        return (row.get("status") == "ok" and "composition" in row
                and kept_choice(row, base) == (backbone, composition))
    return matches


def pick_of(rows: list[dict], base: Composition,
            current: tuple[str, Composition] | None) -> Pick | None:
    """The suggestion from ranked rows: the probe's best, or ``current`` when not beaten.

    ``base`` is the composition the candidates were made from; ``current`` the backbone and
    composition in use (None: the probe's best, whatever it is). See
    :func:`~napari_dfl.core.heads.selection.choose`.
    """
    return choose(rows, None if current is None else in_use(*current, base))


def current_extractor(specs: Sequence[str | os.PathLike]) -> tuple[str, Composition]:
    """The backbone and composition ``train`` would use on ``specs`` today.

    The choice ``select --apply`` kept, else the built-in defaults for these annotations
    (cell-sized fields for points alone). A kept choice that cannot be read counts as none
    (``train`` says so and uses the defaults too).
    """
    try:
        preferred = load_preferred()
    except DFLError:
        preferred = None
    if preferred is not None:
        return preferred.backbone, preferred.composition
    return DEFAULT_BACKBONE, default_composition(annotation_kinds(specs))


def kept_choice(row: dict, base: Composition) -> tuple[str, Composition]:
    """A ranked row's backbone and composition as ``select --apply`` keeps them.

    The input size stays "the backbone's own" when ``base`` (the composition the candidates
    were made from) left it so, rather than the size it resolved to for this backbone.
    """
    composition = Composition.from_dict(row["composition"])
    if base.input_size is None:
        composition = replace(composition, input_size=None)
    return row["backbone"], composition


def choice_record(row: dict, datasets: Sequence[str]) -> dict:
    """What chose a kept row (``save_preferred``'s ``chosen``): its figures and data."""
    return {"balanced_accuracy": row["balanced_accuracy"],
            "balanced_accuracy_sd": row["balanced_accuracy_sd"],
            "folds": row["folds"], "samples": row["samples"], "datasets": list(datasets)}


def _groups_per_class(labels: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    return {str(c): len(np.unique(groups[labels == c])) for c in np.unique(labels)}


def plan_suggestion(slide, annotations: Sequence[Annotation], settings: Settings,
                    fields: Sequence[int] = DEFAULT_FIELDS, *, folds: int = DEFAULT_FOLDS,
                    composition: Composition = SELECT_COMPOSITION) -> SuggestPlan:
    """Check the annotations and decide the fields and folds, without reading a pixel.

    Every class needs samples in two groups (regions or points) or more at a field for the
    grouped probe; a field where one has fewer is left out (a note says so). The folds are
    ``folds`` (the CLI's 5), or fewer: the fewest groups any class has at the fields kept.

    Raises:
        DFLError: no annotations, fewer than two classes, or no field where every class has
            two groups (one line each, saying what to draw).

    """
    annotations = list(annotations)
    if not annotations:
        raise DFLError("no annotations to compare settings on: draw regions or points of at "
                       "least two classes, then Suggest settings.")
    classes = sorted({a.label for a in annotations})
    if len(classes) < 2:
        raise DFLError(f"only one class is annotated ('{classes[0]}'): suggesting settings "
                       "compares how well candidates tell classes apart; annotate a second "
                       "class, then Suggest settings.")
    found: dict[int, SampleSet] = {}
    notes, fewest, short_at = [], [], []
    for size in dict.fromkeys(int(f) for f in fields):
        candidate = settings.with_(composition=replace(composition, patch_size=size))
        samples = annotation_samples(slide, annotations, candidate)
        per_class = _groups_per_class(samples.labels, samples.groups)
        short = {c: per_class.get(c, 0) for c in classes if per_class.get(c, 0) < 2}
        if short:
            listed = ", ".join(f"'{c}' {n}" for c, n in short.items())
            short_at.append(f"at {size} px {listed}")
            notes.append(f"{size} px left out: regions or points with samples there: "
                         f"{listed} (each class needs 2).")
            continue
        found[size] = samples
        fewest.append(min(per_class.values()))
    if not found:
        raise DFLError("too few regions or points to compare settings: each class needs "
                       "samples in at least 2 regions or points (the folds keep each on one "
                       f"side); {'; '.join(short_at)}. Draw more regions or points of those "
                       "classes.")
    return SuggestPlan(tuple(found), max(2, min(int(folds), *fewest)),
                       {size: len(samples) for size, samples in found.items()}, tuple(notes),
                       found)


def suggest_settings(slide, annotations: Sequence[Annotation], settings: Settings,
                     make_embedder: Callable[[Settings], Embedder], *,
                     fields: Sequence[int] = DEFAULT_FIELDS, folds: int = DEFAULT_FOLDS,
                     composition: Composition = SELECT_COMPOSITION,
                     cancel: CancelCheck | None = None, plan: SuggestPlan | None = None,
                     ) -> Generator[Event, None, Suggestion]:
    """Rank candidates on one slide's annotations: ``napari-dfl select`` as a panel job.

    The candidates are :func:`compare_settings`'s: ``settings.backbone`` x ``fields`` x
    {x20, x20 + context} x {rgb, rgb + gray} of ``composition`` (the CLI's defaults) with
    the context of ``settings`` (centred, nearest or shared), each probed on the same
    grouped folds. The samples are the annotations' (as Train makes them) and embed through
    ``make_embedder(candidate settings)`` into ``settings``' store folder, so stored
    embeddings are reused and new ones kept. The same annotations exported as a dataset
    give the same rows with ``compare_settings(..., folds=plan.folds)``.

    ``plan`` is :func:`plan_suggestion`'s for the same arguments, when the caller made it
    already (the panel, to refuse bad annotations at once): its samples are embedded as they
    are, not cut again.

    Yields:
        ``("embedding", EmbedProgress)`` while a field embeds and ``("candidate", row)`` as
        each candidate is measured.

    Returns:
        The :class:`Suggestion` (rows ranked best first, the plan; its pick weighs the best
        against ``settings``' own backbone and composition); nothing is applied.

    Raises:
        DFLError: bad annotations (see :func:`plan_suggestion`), before anything is embedded.
        Cancelled: ``cancel()`` turned true (the embeddings committed stay in the store).

    """
    if plan is None:
        plan = plan_suggestion(slide, annotations, settings, fields, folds=folds,
                               composition=composition)
    # the candidates' context is the one in use, so the settings in use are among them
    composition = replace(composition, context=settings.composition.context)

    def embed(candidate: Settings) -> Generator[Event, None, LabelledEmbeddings]:
        samples = plan.sample_sets[candidate.composition.patch_size]
        store = yield from as_events("embedding", ensure_embedded(
            make_embedder(candidate), slide, samples.coords, cancel))
        return labelled_from_store(samples, store)

    base = settings.with_(composition=composition)
    rows = yield from _rank_candidates(embed, [settings.backbone], plan.fields, base,
                                       plan.folds, cancel)
    return Suggestion(rows, plan, base, composition, str(slide.path),
                      (settings.backbone, settings.composition))
