"""The extractor kept by ``napari-dfl select --apply``: read back with checks, or refused."""

from __future__ import annotations

import json

import pytest

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.preferred import (
    clear_preferred,
    load_preferred,
    preferred_path,
    save_preferred,
)
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.workflows.session import Session


def test_a_kept_choice_is_the_sessions_start(user_folders):
    assert load_preferred() is None and Session().settings == Settings()
    choice = Composition(64, (0.5, 2.0), ("rgb",))
    path = save_preferred("efficientnet-lite2", choice, {"balanced_accuracy": 0.61,
                                                         "samples": 3200})
    assert path == preferred_path() and path.is_relative_to(user_folders)
    kept = load_preferred()
    assert (kept.backbone, kept.composition) == ("efficientnet-lite2", choice)
    assert "balanced accuracy 0.610 on 3200 samples" in kept.describe()
    session = Session()
    assert session.settings.backbone == "efficientnet-lite2"
    assert session.settings.composition == choice
    assert "chosen on your labels by napari-dfl select" in session.status
    assert clear_preferred() and not clear_preferred()
    assert load_preferred() is None


@pytest.mark.parametrize("content", [
    "{not json", json.dumps([1, 2]), json.dumps({"format": "something else"}),
    json.dumps({"format": "napari-dfl preferred extractor", "backbone": "x",
                "composition": {"patch_size": 5, "zooms": [0.5], "variants": ["rgb"]}}),
    json.dumps({"format": "napari-dfl preferred extractor", "backbone": "",
                "composition": Composition().to_dict()}),
])
def test_a_damaged_choice_is_named_and_the_defaults_kept(content):
    path = preferred_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(DFLError, match="select --reset") as info:
        load_preferred()
    assert str(path) in str(info.value)
    session = Session()
    assert session.settings == Settings() and "built-in settings are used" in session.status
