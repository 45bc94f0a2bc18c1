"""The annotations journal: every edit on disk at once, replayed after a crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from shapely.geometry import Point, box

from napari_dfl.core.annotations.annotation import Annotation, read_geojson
from napari_dfl.core.project.journal import JOURNAL_NAME, AnnotationJournal, replay

COLORS = {"tumour": "#ff7f00", "stroma": "#1b9e77"}


def region(i: int, label: str = "tumour") -> Annotation:
    return Annotation(box(i * 100, 0, i * 100 + 50, 50), label, id=f"r{i}")


def test_edits_replay_onto_the_last_geojson(tmp_path):
    journal = AnnotationJournal(tmp_path)
    first = [region(0), region(1, "stroma")]
    journal.compact(first, COLORS)
    assert not (tmp_path / JOURNAL_NAME).exists()
    moved = Annotation(box(5, 5, 60, 60), "tumour", id="r0")
    point = Annotation(Point(7, 7), "stroma", id="p0")
    assert journal.record([moved, region(1, "stroma"), point], COLORS) == 2
    assert journal.record([moved, region(1, "stroma"), point], COLORS) == 0  # nothing new
    assert journal.record([moved, point], {**COLORS, "necrosis": "#000000"}) == 2
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) == 2

    result = replay(tmp_path, read_geojson(tmp_path / "annotations.geojson"), COLORS)
    assert result.edits == 2 and not result.torn
    assert [(a.id, a.label, a.geometry.bounds) for a in result.annotations] == \
        [("r0", "tumour", (5.0, 5.0, 60.0, 60.0)), ("p0", "stroma", (7.0, 7.0, 7.0, 7.0))]
    assert result.colors["necrosis"] == "#000000"

    # compacting writes the state and empties the journal; replaying again changes nothing
    journal.compact(result.annotations, result.colors)
    assert not (tmp_path / JOURNAL_NAME).exists()
    again = replay(tmp_path, read_geojson(tmp_path / "annotations.geojson"))
    assert again.edits == 0 and [a.id for a in again.annotations] == ["r0", "p0"]


def test_a_torn_last_line_is_ignored_and_lines_already_saved_change_nothing(tmp_path):
    journal = AnnotationJournal(tmp_path)
    journal.record([region(0)], COLORS)
    journal.record([region(0), region(1)], COLORS)
    whole = (tmp_path / JOURNAL_NAME).read_bytes()
    with open(tmp_path / JOURNAL_NAME, "ab") as handle:  # a crash in the middle of a line
        handle.write(b'{"format":"napari-dfl-journal","upsert":[{"type":"Fea')
    result = replay(tmp_path, [])
    assert result.torn and result.edits == 2
    assert [a.id for a in result.annotations] == ["r0", "r1"]

    # killed after the GeoJSON was written but before the journal was emptied
    from napari_dfl.core.annotations.annotation import write_geojson

    write_geojson([region(0), region(1)], tmp_path / "annotations.geojson")
    (tmp_path / JOURNAL_NAME).write_bytes(whole)
    result = replay(tmp_path, read_geojson(tmp_path / "annotations.geojson"))
    assert [a.id for a in result.annotations] == ["r0", "r1"] and result.edits == 2

    (tmp_path / JOURNAL_NAME).write_bytes(b"\x00\xff not json\n")
    assert replay(tmp_path, [region(5)]).annotations == [region(5)]


def test_a_line_of_another_kind_is_not_trusted(tmp_path):
    (tmp_path / JOURNAL_NAME).write_text(json.dumps({"format": "something-else",
                                                     "remove": ["r0"]}) + "\n")
    result = replay(tmp_path, [region(0)])
    assert result.torn and [a.id for a in result.annotations] == ["r0"]
    (tmp_path / JOURNAL_NAME).write_text(json.dumps({"format": "napari-dfl-journal",
                                                     "remove": [1, 2]}) + "\n")
    assert replay(tmp_path, [region(0)]).torn


CHILD = """
import sys, time
from shapely.geometry import box
from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.project.journal import AnnotationJournal

journal = AnnotationJournal(sys.argv[1])
drawn = []
for i in range(100000):
    drawn.append(Annotation(box(i, 0, i + 5, 5), "tumour", id=f"r{i}"))
    journal.record(drawn, {"tumour": "#ff7f00"})
    print(i, flush=True)
"""


def test_a_process_killed_while_journaling_leaves_every_edit_it_reported(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    reported = -1
    deadline = time.monotonic() + 120
    while reported < 300 and time.monotonic() < deadline:
        reported = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert reported >= 300
    result = replay(tmp_path, [])
    ids = [a.id for a in result.annotations]
    assert len(ids) >= reported + 1, "every edit reported before the kill is on disk"
    assert ids == [f"r{i}" for i in range(len(ids))], "a prefix of the edits, in order"


@pytest.mark.parametrize("count", [1, 205])
def test_journal_restores_what_a_crash_left_before_any_geojson(tmp_path, count):
    journal = AnnotationJournal(tmp_path)
    drawn = []
    for i in range(count):
        drawn.append(region(i))
        journal.record(drawn, COLORS)
    assert not (tmp_path / "annotations.geojson").exists()
    assert len(replay(tmp_path, []).annotations) == count
