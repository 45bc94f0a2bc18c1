"""A head's assessment as a small rich-text block for a QLabel: honest numbers only.

The figure shown is the grouped cross-validation of :mod:`napari_dfl.core.heads.assessment`:
how many samples and regions it rests on, its 95 % interval, the classes it could not
validate, and no figure at all when there is too little to judge.
"""

from __future__ import annotations

from html import escape

from napari_dfl.core.heads.metrics import NO_KAPPA, metric_text

__all__ = ["assessment_html"]


def _pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.0f}%"


def _counts(per_class: dict) -> str:
    return ", ".join(f"{escape(c)} {k['samples']} in {k['groups']}"
                     for c, k in per_class.items())


def assessment_html(assessment: dict | None) -> str:
    """Rich text for the panel: method, sample and region counts, figure with its interval.

    Args:
        assessment: what :func:`~napari_dfl.core.heads.assessment.assess` returned (None for
            a head without one, e.g. read from an older file).

    """
    if not assessment:
        return "No assessment of this head (it was saved without one): Train to measure it."
    per_class = assessment.get("per_class") or {}
    head = (f"Grouped {assessment['folds']}-fold cross-validation of "
            f"{assessment['n']} samples in {assessment['n_groups']} regions"
            if assessment.get("folds") else
            f"{sum(k['samples'] for k in per_class.values())} samples in "
            f"{assessment['n_groups']} regions")
    lines = [head + ".", f"Samples (regions) per class: {_counts(per_class)}."]
    missing = assessment.get("not_validated") or []
    if missing:
        lines.append(f"Not validated: {escape(', '.join(missing))} (all samples in one "
                     "region: annotate another region of it).")
    if not assessment.get("judgeable"):
        reason = escape(str(assessment.get("reason") or "too few to judge"))
        lines.insert(0, f"<b>No figure yet</b>: {reason}.")
        return "<br>".join(lines)
    low, high = assessment["ci"]
    lines.insert(0, f"Balanced accuracy <b>{_pct(assessment['balanced_accuracy'])}</b> "
                    f"(95% interval {_pct(low)}–{_pct(high)}), Cohen κ "
                    f"{escape(metric_text(assessment.get('cohen_kappa'), NO_KAPPA, 2))}")
    classes = assessment.get("classes") or []
    rows = ["<table cellspacing='0' cellpadding='2' border='1'><tr><th>true \\ pred.</th>"
            + "".join(f"<th>{escape(c)}</th>" for c in classes) + "<th>recall</th></tr>"]
    for name, counts in zip(classes, assessment.get("confusion_matrix") or [], strict=False):
        recall = (assessment.get("recall") or {}).get(name)
        rows.append(f"<tr><th>{escape(name)}</th>"
                    + "".join(f"<td align='right'>{int(v)}</td>" for v in counts)
                    + f"<td align='right'>{_pct(recall)}</td></tr>")
    rows.append("</table>")
    return "<br>".join(lines) + "".join(rows)
