"""Validation metrics of a head as a small HTML table for a QLabel."""

from __future__ import annotations

from html import escape


def _pct(value) -> str:
    return "–" if value is None else f"{100 * float(value):.0f}%"


def metrics_html(head) -> str:
    """Balanced accuracy, per-class recall and the confusion matrix of a trained head.

    Args:
        head: a ``TrainedHead``; its ``metrics`` is a ``classification_report`` or None
            (no validation split was possible).

    Returns:
        Rich text for a QLabel.

    """
    report = getattr(head, "metrics", None)
    if not report:
        return ("<b>No validation split</b>: annotate each class in several regions to "
                "measure the head.")
    classes = list(report["classes"])
    rows = [f"<b>Balanced accuracy {_pct(report['balanced_accuracy'])}</b> "
            f"(validation, {report.get('n', '?')} samples)",
            "<table cellspacing='0' cellpadding='2' border='1'>",
            "<tr><th>true \\ pred.</th>"
            + "".join(f"<th>{escape(c)}</th>" for c in classes) + "<th>recall</th></tr>"]
    for name, counts in zip(classes, report["confusion_matrix"], strict=True):
        recall = report["per_class"].get(name, {}).get("recall")
        rows.append(f"<tr><th>{escape(name)}</th>"
                    + "".join(f"<td align='right'>{int(v)}</td>" for v in counts)
                    + f"<td align='right'>{_pct(recall)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)
