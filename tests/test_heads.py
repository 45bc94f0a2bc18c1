"""Heads: training on class-structured embeddings, loss, noise, reproducibility, splits,
bad input, cancel, the head folder and compatibility; real CRC nuclei when present."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.heads.config import TrainConfig, TrainingError, TrainProgress, step_lr
from napari_dfl.core.heads.head_files import (
    CARD_NAME,
    HEAD_FORMAT_VERSION,
    WEIGHTS_NAME,
    HeadFileError,
    HeadMismatchError,
    check_compatible,
    load_head,
    save_head,
)
from napari_dfl.core.heads.model import TrainedHead, focal_loss
from napari_dfl.core.heads.splits import grouped_split
from napari_dfl.core.heads.training import TrainingCancelled, fit, train_head
from napari_dfl.core.heads.validation import cross_validate, json_ready
from napari_dfl.core.slides.sampling import Composition

FAST = TrainConfig(max_epochs=30, patience=5)
EXTRACTOR_RECORD = {
    "kind": "napari-dfl tile embeddings",
    "slide": {"name": "a.svs"},
    "backbone": {"name": "efficientnet-lite0", "timm_name": "tf_efficientnet_lite0",
                 "weights_sha256": "ab" * 32, "input_size": 224, "mean": [0.5] * 3,
                 "std": [0.5] * 3, "interpolation": "bicubic", "embed_dim": 8},
    "composition": {"patch_size": 224, "zooms": [0.5], "variants": ["rgb", "gray"]},
}
EXTRACTOR = Extractor.from_dict(EXTRACTOR_RECORD)


def blobs(n: int = 400, dim: int = 64, n_classes: int = 4, sep: float = 3.0, seed: int = 0,
          n_groups: int = 20):
    """Gaussian blobs: class means on random directions, ``sep`` apart in units of noise."""
    means = np.random.default_rng(123).normal(size=(n_classes, dim)) * sep / np.sqrt(2)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = (means[y] + rng.normal(size=(n, dim))).astype(np.float32) + 5.0
    labels = np.array([f"c{k}" for k in y])
    return x, labels, rng.integers(0, n_groups, size=n)


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def head(data) -> TrainedHead:
    x, labels, groups = data
    return fit(x[:, :16], labels, groups, FAST)


def state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


# -- training ----------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "dim"), [("mlp", 64), ("linear", 64), ("mlp", 1280)])
def test_training_beats_chance_on_held_out_blobs(kind, dim):
    x, labels, groups = blobs(n=900, dim=dim, sep=2.5)
    train, test = groups < 15, groups >= 15
    head = fit(x[train], labels[train], groups[train], TrainConfig(head=kind, patience=5))
    predicted = np.array(head.classes)[head.predict(x[test])]
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(labels[test], predicted) > 0.75  # chance: 0.25
    assert head.metrics["balanced_accuracy"] > 0.75
    assert head.classes == ["c0", "c1", "c2", "c3"]
    assert head.mean.dtype == np.float32 and head.mean.shape == (dim,)
    assert not head.model.training


def test_generator_yields_progress_and_returns_head(data):
    x, labels, groups = data
    gen = train_head(x, labels, groups, TrainConfig(max_epochs=4, patience=10))
    steps = []
    with pytest.raises(StopIteration) as stop:
        while True:
            steps.append(next(gen))
    assert [p.epoch for p in steps] == [1, 2, 3, 4]
    assert all(isinstance(p, TrainProgress) and p.max_epochs == 4 for p in steps)
    assert all(p.val_loss is not None and 0 <= p.val_balanced_accuracy <= 1 for p in steps)
    result = stop.value.value
    assert isinstance(result, TrainedHead) and result.history == steps
    assert 1 <= steps[-1].best_epoch <= 4
    assert result.data_summary["n"] == len(x) and result.data_summary["n_groups"] == 20


def test_early_stopping_restores_best_weights(data):
    x, labels, groups = data
    seen = []
    # noise keeps the validation loss from improving forever on these easy synthetic data
    fit(x, labels, groups, TrainConfig(max_epochs=200, patience=3, noise=2.0),
        progress=seen.append)
    assert len(seen) < 200 and seen[-1].epoch - seen[-1].best_epoch == 3
    best = min(p.val_loss for p in seen)
    assert seen[seen[-1].best_epoch - 1].val_loss == pytest.approx(best, rel=2e-3)


def test_no_validation_split_still_trains(data):
    x, labels, groups = data
    head = fit(x, labels, groups, TrainConfig(val_fraction=0.0, max_epochs=5))
    assert head.metrics is None and all(p.val_loss is None for p in head.history)


def test_focal_loss_equals_cross_entropy_when_gamma_is_zero():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=gen) * 3
    targets = torch.randint(0, 5, (64,), generator=gen)
    weight = torch.rand(5, generator=gen) + 0.1
    torch.testing.assert_close(focal_loss(logits, targets, 0.0),
                               F.cross_entropy(logits, targets), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(focal_loss(logits, targets, 0.0, weight),
                               F.cross_entropy(logits, targets, weight=weight),
                               rtol=1e-6, atol=1e-7)
    assert focal_loss(logits, targets, 2.0) < F.cross_entropy(logits, targets)


def test_noise_only_in_training_and_predictions_deterministic(data):
    x, labels, groups = data
    noisy = fit(x, labels, groups, TrainConfig(max_epochs=3, noise=1.0, seed=1))
    clean = fit(x, labels, groups, TrainConfig(max_epochs=3, noise=0.0, seed=1))
    assert any(not torch.equal(a, b) for a, b in
               zip(state(noisy.model).values(), state(clean.model).values(), strict=True))
    first, second = noisy.predict_proba(x), noisy.predict_proba(x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first.sum(1), 1.0, rtol=1e-5)
    assert first.dtype == np.float32 and first.shape == (len(x), 4)
    np.testing.assert_allclose(noisy.predict_proba(x[:7], batch=3), first[:7], atol=1e-6)


def test_same_seed_same_weights_other_seed_differs(data):
    x, labels, groups = data
    config = TrainConfig(max_epochs=3, patience=10)
    a, b = fit(x, labels, groups, config), fit(x, labels, groups, config)
    c = fit(x, labels, groups, TrainConfig(max_epochs=3, patience=10, seed=7))
    for key, value in state(a.model).items():
        assert torch.equal(value, state(b.model)[key])
    assert any(not torch.equal(v, state(c.model)[k]) for k, v in state(a.model).items())
    assert [p.train_loss for p in a.history] == [p.train_loss for p in b.history]


def test_torch_global_rng_untouched(data):
    x, labels, groups = data
    torch.manual_seed(5)
    before = torch.get_rng_state()
    fit(x, labels, groups, TrainConfig(max_epochs=2))
    assert torch.equal(before, torch.get_rng_state())


def test_cancel_raises(data):
    x, labels, groups = data
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled, match="cancelled at epoch 3"):
        fit(x, labels, groups, TrainConfig(max_epochs=50, patience=50), cancel=cancel)


# -- bad input ----------------------------------------------------------------------------
def test_refuses_bad_training_data(data):
    x, labels, groups = data
    with pytest.raises(TrainingError, match="at least two classes"):
        fit(x, np.full(len(x), "tumour"), groups)
    one = labels.astype(object)
    one[0] = "rare"
    with pytest.raises(TrainingError, match="'rare' has 1 sample"):
        fit(x, one, groups)
    with pytest.raises(TrainingError, match="'absent' has 0 sample"):
        fit(x, labels, groups, classes=["c0", "c1", "c2", "c3", "absent"])
    with pytest.raises(TrainingError, match=r"not among the classes"):
        fit(x, labels, groups, classes=["c0", "c1"])
    bad = x.copy()
    bad[[3, 9, 11], 5] = np.nan
    bad[20, 0] = np.inf
    with pytest.raises(TrainingError, match="4 of 400 embedding rows contain NaN or inf"):
        fit(bad, labels, groups)
    with pytest.raises(TrainingError, match="do not match"):
        fit(x[:-1], labels, groups)
    with pytest.raises(TrainingError, match="groups"):
        fit(x, labels, groups[:-1])
    with pytest.raises(TrainingError, match="noise must be >= 0"):
        TrainConfig(noise=-1)
    with pytest.raises(TrainingError, match="head must be one of"):
        TrainConfig(head="transformer")


def test_predict_refuses_wrong_dim_and_nan(head, data):
    x = data[0]
    with pytest.raises(DFLError, match=r"\(N, 16\)"):
        head.predict_proba(x)
    bad = x[:5, :16].copy()
    bad[2, 3] = np.nan
    with pytest.raises(DFLError, match="1 of 5 embedding rows"):
        head.predict(bad)


def test_given_class_order_is_kept(data):
    x, labels, groups = data
    order = ["c3", "c1", "c0", "c2"]
    h = fit(x, labels, groups, TrainConfig(max_epochs=20, patience=5), classes=order)
    assert h.classes == order
    predicted = np.array(order)[h.predict(x)]
    assert (predicted == labels).mean() > 0.8


def test_config_round_trip_and_strict_from_dict():
    config = TrainConfig(head="linear", noise=0.3, seed=4)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0
    with pytest.raises(TrainingError, match="unknown training configuration key"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(TrainingError, match="'hidden' must be int"):
        TrainConfig.from_dict({"hidden": "256"})
    with pytest.raises(TrainingError, match="'class_weights' must be bool"):
        TrainConfig.from_dict({"class_weights": 1})


def test_step_lr_is_lr_for_one_batch_and_shrinks_with_more():
    config = TrainConfig(lr=1e-3, batch_size=256)
    assert step_lr(config, 40) == step_lr(config, 256) == 1e-3
    assert step_lr(config, 2560) == pytest.approx(1e-4)
    assert step_lr(TrainConfig(scale_lr=False), 2560) == 1e-3


def test_scaled_lr_changes_only_heads_of_more_than_one_batch():
    x, labels, groups = blobs(n=1200, dim=32)
    config = TrainConfig(max_epochs=3, patience=3, batch_size=256)
    kept = fit(x, labels, groups, config)
    unscaled = fit(x, labels, groups, TrainConfig(max_epochs=3, patience=3, batch_size=256,
                                                  scale_lr=False))
    assert kept.data_summary["step_lr"] == pytest.approx(1e-3 * 256 / kept.data_summary["n_train"])
    assert unscaled.data_summary["step_lr"] == 1e-3
    assert not torch.equal(kept.model.hidden.weight, unscaled.model.hidden.weight)
    one_batch = x[:200], labels[:200], groups[:200]  # fits in one batch: trained the same
    a = fit(*one_batch, config)
    b = fit(*one_batch, TrainConfig(max_epochs=3, patience=3, batch_size=256, scale_lr=False))
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(),
                                                 strict=True))


def test_a_card_from_before_scale_lr_keeps_its_meaning():
    record = TrainConfig().to_dict()
    del record["scale_lr"]
    assert TrainConfig.from_dict(record).scale_lr is False
    assert TrainConfig.from_dict(TrainConfig().to_dict()).scale_lr is True


# -- splits -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12)), min_size=4, max_size=120),
       st.sampled_from([0.1, 0.2, 0.25, 0.5]), st.integers(0, 5))
def test_grouped_split_never_puts_a_group_on_both_sides(pairs, fraction, seed):
    labels = np.array([p[0] for p in pairs])
    groups = np.array([p[1] for p in pairs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = grouped_split(labels, groups, fraction, seed)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert not set(groups[train]) & set(groups[val])
    assert set(labels[train]) == set(labels)  # every class keeps training samples


def test_grouped_split_keeps_single_group_class_in_training():
    labels = np.array(["a"] * 30 + ["b"] * 30 + ["rare"] * 5)
    groups = np.array(list(range(10)) * 6 + [99] * 5)
    with pytest.warns(UserWarning, match="'rare' have all their samples in one group"):
        train, val = grouped_split(labels, groups, 0.2, 0)
    assert set(labels[val]) == {"a", "b"} and np.isin(np.arange(60, 65), train).all()
    with pytest.warns(UserWarning, match="one group"):
        train, val = grouped_split(labels, np.zeros(65), 0.2, 0)
    assert len(val) == 0 and len(train) == 65


def test_cross_validate_reports_and_refuses_too_many_folds(data):
    x, labels, groups = data
    result = cross_validate(x[:, :16], labels, groups % 6, FAST, folds=3)
    assert len(result["folds"]) == 3 and result["n_folds"] == 3
    for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1"):
        values = [f[key] for f in result["folds"]]
        assert result[key] == pytest.approx(np.mean(values))
        assert result[f"{key}_sd"] == pytest.approx(np.std(values, ddof=1))
    assert result["balanced_accuracy"] > 0.7
    json.dumps(json_ready(result), allow_nan=False)
    pooled = result["pooled"]
    assert pooled["n"] == len(labels) and result["out_of_fold"]["proba"].shape == (400, 4)
    with pytest.raises(TrainingError, match=r"7 folds need at least 7 groups.*has 6"):
        cross_validate(x, labels, groups % 6, FAST, folds=7)


# -- the head folder ----------------------------------------------------------------------
def test_save_load_round_trip_identical_predictions(head, data, tmp_path):
    path = save_head(head, tmp_path / "t.dflhead", extractor=EXTRACTOR,
                     colors={"c0": "#ff0000"})
    assert sorted(p.name for p in path.iterdir()) == [CARD_NAME, WEIGHTS_NAME]
    loaded, card = load_head(path)
    x = data[0][:, :16]
    np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))
    assert loaded.classes == head.classes and loaded.config == head.config
    assert card["format_version"] == HEAD_FORMAT_VERSION
    assert card["architecture"] == {"head": "mlp", "input_dim": 16, "hidden": 256,
                                    "n_classes": 4, "dropout": 0.2}
    assert "slide" not in card["extractor"] and card["colors"]["c0"] == "#ff0000"
    assert card["colors"]["c1"].startswith("#") and card["data_summary"]["n"] == 400
    assert card["metrics"]["balanced_accuracy"] == head.metrics["balanced_accuracy"]
    # replacing an existing head is safe; loading the card file path works too
    save_head(head, path, extractor=EXTRACTOR)
    assert load_head(path / CARD_NAME)[1]["colors"]["c0"] != "#ff0000"
    assert [p.name for p in tmp_path.iterdir()] == ["t.dflhead"]


def test_save_refuses_to_overwrite_other_things(head, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(HeadFileError, match="not a napari-dfl head folder"):
        save_head(head, tmp_path / "notes", extractor=EXTRACTOR)
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    with pytest.raises(HeadFileError, match="weights_sha256"):
        save_head(head, tmp_path / "h", extractor=Extractor.chosen("x", Composition()))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.pop("classes"), "missing 'classes'"),
    (lambda c: c["architecture"].pop("input_dim"), "missing 'architecture.input_dim'"),
    (lambda c: c["architecture"].update(hidden="256"), "'architecture.hidden' must be int"),
    (lambda c: c.update(format_version=True), "'format_version' must be int"),
    (lambda c: c["extractor"]["backbone"].update(weights_sha256=1), "weights_sha256"),
    (lambda c: c.update(classes=["a", "a", "b", "c"]), "distinct"),
    (lambda c: c["training"].update(noise="lots"), "'noise' must be float"),
    (lambda c: c.update(format_version=HEAD_FORMAT_VERSION + 1), "update napari-dfl"),
    (lambda c: c["architecture"].update(dropout="x"), "dropout must be in"),
    (lambda c: c["colors"].update(c0="red"), "rrggbb"),
    # a card claiming a huge head: refused by the weights' shapes, nothing allocated
    (lambda c: c["architecture"].update(input_dim=2_500_000, hidden=1000),
     r"'model.hidden.weight' is float32 \(\d+, \d+\), the card's architecture needs "
     r"float32 \(1000, 2500000\)"),
    (lambda c: c["architecture"].update(input_dim=10**12), r"needs float32 \(\d+, 10{12}\)"),
])
def test_load_refuses_tampered_card(head, tmp_path, edit, message):
    path = save_head(head, tmp_path / "h.dflhead", extractor=EXTRACTOR)
    card = json.loads((path / CARD_NAME).read_text())
    edit(card)
    (path / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(HeadFileError, match=message):
        load_head(path)


def test_load_refuses_pickle_bad_json_and_wrong_shapes(head, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = save_head(head, tmp_path / "h.dflhead", extractor=EXTRACTOR)
    weights = path / WEIGHTS_NAME
    good = weights.read_bytes()
    tensors = load_file(str(weights))
    weights.write_bytes(pickle.dumps({k: v for k, v in tensors.items()}))
    with pytest.raises(HeadFileError, match="pickle"):
        load_head(path)
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(HeadFileError, match="never unpickles"):
        load_head(path)
    tensors["model.out.weight"] = np.zeros((4, 17), np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(HeadFileError, match=r"'model.out.weight' is float32 \(4, 17\)"):
        load_head(path)
    del tensors["model.out.weight"]
    save_file(tensors, str(weights))
    with pytest.raises(HeadFileError, match=r"missing \['model\.out\.weight'\]"):
        load_head(path)
    weights.write_bytes(good)
    (path / CARD_NAME).write_text("{not json")
    with pytest.raises(HeadFileError, match="not valid JSON"):
        load_head(path)
    with pytest.raises(HeadFileError, match="does not exist"):
        load_head(tmp_path / "nowhere.dflhead")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadFileError, match=r"no model_card\.json"):
        load_head(tmp_path / "empty")


def test_check_compatible_names_what_differs(head, tmp_path):
    _, card = load_head(save_head(head, tmp_path / "h.dflhead", extractor=EXTRACTOR))
    check_compatible(card, EXTRACTOR)  # same extractor
    check_compatible(card, Extractor.chosen("efficientnet-lite0", EXTRACTOR.composition))
    other = json.loads(json.dumps(EXTRACTOR_RECORD))
    other["backbone"].update(name="resnet50", weights_sha256="cd" * 32, embed_dim=8)
    other["composition"].update(zooms=[0.5, 2.0], patch_size=256)
    with pytest.raises(HeadMismatchError) as info:
        check_compatible(card, Extractor.from_dict(other))
    text = str(info.value)
    for field in ("backbone efficientnet-lite0 (now: resnet50)",
                  "backbone weights abababababab (now: cdcdcdcdcdcd)",
                  "zooms [0.5] (now: [0.5, 2])", "patch_size 224 (now: 256)"):
        assert field in text, text
    assert "train a new head" in text and "variants" not in text
    assert len(info.value.differences) == 4


# -- real data ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_backbone_on_crc_nuclei_beats_chance(backbone):
    crc = SHARED_DATA / "crchisto"
    if not (crc / "nuclei_labels.csv").exists():
        pytest.skip(f"{crc} is absent: real CRC nuclei test skipped")
    from PIL import Image

    rows = [line.split(",") for line in (crc / "nuclei_labels.csv").read_text().split()[1:]]
    rng = np.random.default_rng(0)
    picked: dict[str, list] = {}
    for i in rng.permutation(len(rows)):
        image, x, y, label = rows[i]
        if label != "others" and len(picked.setdefault(label, [])) < 60 and \
                sum(r[0] == image for r in picked[label]) < 3:
            picked[label].append((image, float(x), float(y)))
    patches, labels, groups, images = [], [], [], {}
    for label, items in sorted(picked.items()):
        for image, x, y in items:
            if image not in images:
                rgb = np.asarray(Image.open(crc / image).convert("RGB"))
                images[image] = np.pad(rgb, ((32, 32), (32, 32), (0, 0)), mode="reflect")
            cx, cy = round(x) + 32, round(y) + 32
            patches.append(images[image][cy - 32:cy + 32, cx - 32:cx + 32])
            labels.append(label)
            groups.append(image)
    embeddings = backbone.embed(np.stack(patches))
    result = cross_validate(embeddings, labels, np.array(groups), TrainConfig(), folds=4)
    # 3 classes (the heterogeneous "others" left out): chance is 0.33; 1600 nuclei of all
    # 4 classes reach 0.56 (docs/heads.md), these 180 nuclei about 0.5
    print("CRC 3-class grouped 4-fold balanced accuracy", result["balanced_accuracy"])
    assert result["balanced_accuracy"] > 0.43, result
