"""Configurations rebuilt from model cards: types are checked, ints widen to floats."""

from __future__ import annotations

import pytest

from napari_dfl.core.heads.config import TrainConfig, TrainingError
from napari_dfl.core.slide_level.config import MILConfig, MILError


def test_round_trip_and_int_to_float():
    assert TrainConfig.from_dict(TrainConfig(noise=1.5).to_dict()) == TrainConfig(noise=1.5)
    assert TrainConfig.from_dict({"noise": 2}).noise == 2.0


@pytest.mark.parametrize(("data", "match"), [
    ({"noise": "high"}, "'noise' must be float"),
    ({"class_weights": 1}, "'class_weights' must be bool"),
    ({"max_epochs": True}, "'max_epochs' must be int"),
    ([1, 2], "must be a mapping"),
])
def test_wrong_types_are_refused(data, match):
    with pytest.raises(TrainingError, match=match):
        TrainConfig.from_dict(data)
    if isinstance(data, dict) and "noise" in data:
        with pytest.raises(MILError, match=match):
            MILConfig.from_dict(data)
