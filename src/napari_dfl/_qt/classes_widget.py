"""The classes list: add, rename, recolour, delete, pick the active class; counts per class.

A view over the session's classes: buttons call the session, the list is redrawn when the
session says its classes changed. Rows 1-9 show the key that picks them.

Deleting a class that has annotations asks first, inline (a bar under the list, not a modal
dialog that would block the viewer); once deleted, an Undo bar offers it back
(:meth:`napari_dfl.workflows.session.Session.restore_class`).
"""

from __future__ import annotations

from html import escape

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_dfl.core.util.palette import UNKNOWN
from napari_dfl.workflows.session import annotation_counts

__all__ = ["ClassesWidget"]

_NAME_ROLE = Qt.ItemDataRole.UserRole


class ClassesWidget(QWidget):
    """An editable list of the session's classes with their colours and counts."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._counts: dict[str, str] = {}
        self.list = QListWidget()
        self.list.setMaximumHeight(160)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("new class name")
        self.add_button = QPushButton("Add")
        self.rename_button = QPushButton("Rename")
        self.color_button = QPushButton("Colour…")
        self.delete_button = QPushButton("Delete")
        row = QHBoxLayout()
        row.addWidget(self.name_edit)
        for button in (self.add_button, self.rename_button):
            row.addWidget(button)
        row2 = QHBoxLayout()
        row2.addWidget(self.color_button)
        row2.addWidget(self.delete_button)
        self.active_label = QLabel()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.active_label)
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addLayout(row2)
        self.advice = QLabel()
        self.advice.setWordWrap(True)
        self.advice.setStyleSheet("QLabel { color: #ffb454; }")
        self.advice.setVisible(False)
        layout.addWidget(self.advice)
        self.confirm_label, self.confirm_button, self.keep_button = (
            QLabel(), QPushButton("Delete"), QPushButton("Keep"))
        self.confirm_bar = self._bar(self.confirm_label, self.confirm_button, self.keep_button)
        self.undo_label, self.undo_button = QLabel(), QPushButton("Undo")
        self.undo_bar = self._bar(self.undo_label, self.undo_button)
        layout.addWidget(self.confirm_bar)
        layout.addWidget(self.undo_bar)
        self._pending: str | None = None
        self.confirm_button.clicked.connect(self._confirm_delete)
        self.keep_button.clicked.connect(self._cancel_delete)
        self.undo_button.clicked.connect(self._undo)
        session.class_trashed.connect(self._show_undo)
        self.add_button.clicked.connect(self._add)
        self.name_edit.returnPressed.connect(self._add)
        self.rename_button.clicked.connect(self._rename)
        self.delete_button.clicked.connect(self._delete)
        self.color_button.clicked.connect(self._pick_color)
        self.list.currentItemChanged.connect(self._on_current)
        session.classes_changed.connect(self.redraw)
        session.active_class_changed.connect(self._show_active)
        self.redraw()

    def set_counts(self, counts: dict[str, str]) -> None:
        """Show a short count text next to each class (e.g. ``"3 regions, 2 points"``)."""
        self._counts = dict(counts)
        for i in range(self.list.count()):
            self._paint(self.list.item(i))

    def set_advice(self, lines: list[str]) -> None:
        """Show what to fix in the annotations (hidden when there is nothing)."""
        self.advice.setText("\n".join(f"⚠ {line}" for line in lines))
        self.advice.setVisible(bool(lines))

    def redraw(self) -> None:
        """Rebuild the rows from the session's classes."""
        self.list.blockSignals(True)
        self.list.clear()
        for name in self.session.classes:
            item = QListWidgetItem()
            item.setData(_NAME_ROLE, name)
            self.list.addItem(item)
            self._paint(item)
        self.list.blockSignals(False)
        self._show_active(self.session.active)

    def _show_active(self, name) -> None:
        if name is None:
            self.active_label.setText("Add a class to annotate.")
        else:
            key = self.session.classes.index(name) + 1
            colour = self.session.colors.get(name, UNKNOWN)
            self.active_label.setText(
                f"New annotations: <span style='color:{colour}'>&#9632;</span> "
                f"<b>{escape(name)}</b>" + (f" (key {key})" if key <= 9 else ""))
        for i in range(self.list.count()):
            if self.list.item(i).data(_NAME_ROLE) == name:
                if self.list.currentRow() != i:
                    self.list.blockSignals(True)
                    self.list.setCurrentRow(i)
                    self.list.blockSignals(False)
                return

    def _paint(self, item: QListWidgetItem) -> None:
        name = item.data(_NAME_ROLE)
        row = self.list.row(item)
        key = f"{row + 1}: " if row < 9 else ""
        count = self._counts.get(name, "")
        item.setText(f"{key}{name}" + (f"  ({count})" if count else ""))
        pixmap = QPixmap(14, 14)
        pixmap.fill(QColor(self.session.colors.get(name, UNKNOWN)))
        item.setIcon(QIcon(pixmap))

    def _on_current(self, current, _previous) -> None:
        if current is not None:
            self.session.set_active(current.data(_NAME_ROLE))

    def _add(self) -> None:
        if self.session.add_class(self.name_edit.text()):
            self.name_edit.clear()

    def _rename(self) -> None:
        if self.session.active and self.session.rename_class(self.session.active,
                                                             self.name_edit.text()):
            self.name_edit.clear()

    @staticmethod
    def _bar(label: QLabel, *buttons: QPushButton) -> QWidget:
        bar = QWidget()
        row = QHBoxLayout(bar)
        row.setContentsMargins(0, 0, 0, 0)
        label.setWordWrap(True)
        row.addWidget(label, 1)
        for button in buttons:
            row.addWidget(button)
        bar.setVisible(False)
        return bar

    def _delete(self) -> None:
        """Delete the active class; ask first when it has annotations."""
        name = self.session.active
        if not name:
            return
        mine = [a for a in self.session.annotations if a.label == name]
        if not mine:
            self.session.remove_class(name)
            return
        self._pending = name
        self.confirm_label.setText(
            f"Delete '{name}' and its {annotation_counts(mine)}? Undo brings them back.")
        self.confirm_bar.setVisible(True)

    def _confirm_delete(self) -> None:
        name, self._pending = self._pending, None
        self.confirm_bar.setVisible(False)
        if name is not None:
            self.session.remove_class(name)

    def _cancel_delete(self) -> None:
        self._pending = None
        self.confirm_bar.setVisible(False)

    def _show_undo(self, entry) -> None:
        self.undo_label.setText(f"Deleted {entry.describe()}.")
        self.undo_bar.setVisible(True)

    def _undo(self) -> None:
        self.session.restore_class()
        trash = self.session.trash
        if trash:
            self._show_undo(trash[-1])
        else:
            self.undo_bar.setVisible(False)

    def _pick_color(self) -> None:  # pragma: no cover - interactive
        name = self.session.active
        if name is None:
            return
        color = QColorDialog.getColor(QColor(self.session.colors[name]), self,
                                      f"Colour of {name}")
        if color.isValid():
            self.session.set_color(name, color.name())
