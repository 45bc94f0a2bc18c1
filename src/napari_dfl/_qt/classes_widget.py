"""The classes list: add, rename, recolour, delete; the active class; per-class counts."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
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

#: Colours given to new classes in turn (QuPath-like, distinguishable).
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22"]
_NAME_ROLE = Qt.ItemDataRole.UserRole


class ClassesWidget(QWidget):
    """An editable list of classes with colours; one of them is active.

    Signals:
        changed: the set, names or colours of the classes changed.
        active_changed(str): another class became active.
        renamed(str, str): a class was renamed (old, new).
        removed(str): a class was deleted.

    """

    changed = Signal()
    active_changed = Signal(str)
    renamed = Signal(str, str)
    removed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._colors: dict[str, str] = {}
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
        self.add_button.clicked.connect(lambda: self.add_class(self.name_edit.text()))
        self.name_edit.returnPressed.connect(lambda: self.add_class(self.name_edit.text()))
        self.rename_button.clicked.connect(
            lambda: self.rename_class(self.active, self.name_edit.text()))
        self.delete_button.clicked.connect(lambda: self.delete_class(self.active))
        self.color_button.clicked.connect(self._pick_color)
        self.list.currentItemChanged.connect(self._on_current)

    # -- model ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Class names in list order."""
        return [self.list.item(i).data(_NAME_ROLE) for i in range(self.list.count())]

    @property
    def colors(self) -> dict[str, str]:
        """``{name: "#rrggbb"}``."""
        return dict(self._colors)

    @property
    def active(self) -> str | None:
        """The active class, which new annotations get."""
        item = self.list.currentItem()
        return None if item is None else item.data(_NAME_ROLE)

    def add_class(self, name: str, color: str | None = None) -> bool:
        """Add a class (and make it active); False when the name is empty or taken."""
        name = name.strip()
        if not name or name in self._colors:
            return False
        self._colors[name] = color or PALETTE[len(self._colors) % len(PALETTE)]
        item = QListWidgetItem()
        item.setData(_NAME_ROLE, name)
        self.list.addItem(item)
        self._paint(item)
        self.name_edit.clear()
        self.changed.emit()
        self.list.setCurrentItem(item)
        return True

    def rename_class(self, old: str | None, new: str) -> bool:
        """Rename a class; False when ``new`` is empty or taken."""
        new = new.strip()
        item = self._item(old)
        if item is None or not new or new in self._colors:
            return False
        self._colors = {(new if k == old else k): v for k, v in self._colors.items()}
        self._counts[new] = self._counts.pop(old, "")
        item.setData(_NAME_ROLE, new)
        self._paint(item)
        self.name_edit.clear()
        self.renamed.emit(old, new)
        self.changed.emit()
        if self.active == new:
            self.active_changed.emit(new)
        return True

    def set_color(self, name: str, color: str) -> None:
        """Recolour a class (``"#rrggbb"`` or any Qt colour name)."""
        item = self._item(name)
        if item is None:
            return
        self._colors[name] = QColor(color).name()
        self._paint(item)
        self.changed.emit()
        if self.active == name:
            self.active_changed.emit(name)

    def delete_class(self, name: str | None) -> None:
        """Delete a class (its annotations are removed by the panel)."""
        item = self._item(name)
        if item is None:
            return
        self.list.takeItem(self.list.row(item))
        self._colors.pop(name, None)
        self.set_counts(self._counts)
        self.removed.emit(name)
        self.changed.emit()

    def set_active(self, name_or_index: str | int) -> None:
        """Make a class active, by name or by 0-based position (keys 1-9)."""
        if isinstance(name_or_index, int):
            if 0 <= name_or_index < self.list.count():
                self.list.setCurrentRow(name_or_index)
            return
        item = self._item(name_or_index)
        if item is not None:
            self.list.setCurrentItem(item)

    def set_counts(self, counts: dict[str, str]) -> None:
        """Show a short count text next to each class (e.g. ``"3 regions, 2 points"``)."""
        self._counts = dict(counts)
        for i in range(self.list.count()):
            self._paint(self.list.item(i))

    # -- internals ---------------------------------------------------------------------
    def _item(self, name: str | None) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            if self.list.item(i).data(_NAME_ROLE) == name:
                return self.list.item(i)
        return None

    def _paint(self, item: QListWidgetItem) -> None:
        name = item.data(_NAME_ROLE)
        row = self.list.row(item)
        key = f"{row + 1}: " if row < 9 else ""
        count = self._counts.get(name, "")
        item.setText(f"{key}{name}" + (f"  ({count})" if count else ""))
        pixmap = QPixmap(14, 14)
        pixmap.fill(QColor(self._colors.get(name, "#999999")))
        item.setIcon(QIcon(pixmap))

    def _on_current(self, current, _previous) -> None:
        if current is not None:
            self.active_changed.emit(current.data(_NAME_ROLE))

    def _pick_color(self) -> None:  # pragma: no cover - interactive
        name = self.active
        if name is None:
            return
        color = QColorDialog.getColor(QColor(self._colors[name]), self, f"Colour of {name}")
        if color.isValid():
            self.set_color(name, color.name())
