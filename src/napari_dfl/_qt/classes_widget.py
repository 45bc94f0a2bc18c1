"""The classes list: add, rename, recolour, delete, pick the active class; counts per class.

A view over the session's classes: buttons call the session, the list is redrawn when the
session says its classes changed. Rows 1-9 show the key that picks them.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_dfl.core.util.palette import UNKNOWN

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
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(row)
        layout.addLayout(row2)
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

    def _delete(self) -> None:
        if self.session.active:
            self.session.remove_class(self.session.active)

    def _pick_color(self) -> None:  # pragma: no cover - interactive
        name = self.session.active
        if name is None:
            return
        color = QColorDialog.getColor(QColor(self.session.colors[name]), self,
                                      f"Colour of {name}")
        if color.isValid():
            self.session.set_color(name, color.name())
