"""Fine-tuning a backbone on the bundled sample slide's annotations, and using the result."""

from __future__ import annotations

import json
import shutil
import struct
import warnings

import numpy as np
import pytest

from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.backbones.finetuned import (
    FinetunedBackboneError,
    list_finetuned,
    read_card,
    register_finetuned,
)
from napari_dfl.core.errors import DFLError
from napari_dfl.core.finetune.augment import augment_patches, dihedral, hed_jitter
from napari_dfl.core.finetune.folder import save_finetuned
from napari_dfl.core.finetune.patches import load_patches
from napari_dfl.core.finetune.training import (
    FinetuneConfig,
    FinetuneError,
    finetune_patches,
    trainable_names,
)
from napari_dfl.core.slides.sampling import Composition

PATCH = Composition(112, (0.5,), ("rgb",))  # 56 um patches: more samples per region


@pytest.fixture(scope="module")
def sample_patches(sample_slide_path):
    """Real labelled patches of the sample slide (3 classes, 3-4 regions each), subsampled."""
    data = load_patches([sample_slide_path], PATCH)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(data["labels"] == c))[:16]
                                   for c in np.unique(data["labels"])]))
    return {**data, "patches": data["patches"][keep], "labels": data["labels"][keep],
            "groups": data["groups"][keep]}


@pytest.fixture(scope="module")
def tuned(sample_patches, tmp_path_factory):
    """Lite0 fine-tuned (last block) for a few epochs, and its saved folder."""
    config = FinetuneConfig(blocks=1, epochs=2, patience=2, batch_size=16, lr=1e-3,
                            restore_best=False)
    epochs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = finetune_patches(sample_patches["patches"], sample_patches["labels"],
                                  sample_patches["groups"], config=config,
                                  progress=epochs.append)
    folder = save_finetuned(result, tmp_path_factory.mktemp("ft") / "skin-lite0",
                            config=config, dataset={"sources": sample_patches["sources"]})
    return result, folder, epochs


def test_patches_are_real_and_grouped(sample_patches):
    patches = sample_patches["patches"]
    assert patches.dtype == np.uint8 and patches.shape[1:] == (112, 112, 3)
    assert set(sample_patches["labels"]) == {"background", "dermis", "epidermis"}
    assert len(set(sample_patches["groups"])) >= 6
    assert patches.std() > 10  # tissue, not padding


def test_only_unfrozen_blocks_change(tuned):
    result, _, epochs = tuned
    base = load_backbone(fuse=False, precision="fp32")
    before = dict(base.model.named_parameters())
    after = dict(result.backbone.model.named_parameters())
    assert result.summary["kept_epoch"] == len(epochs) - 1 >= 1
    changed = {n for n in after if not np.array_equal(before[n].detach().numpy(),
                                                      after[n].detach().numpy())}
    assert changed, "no weight changed"
    assert changed <= set(result.trainable)
    assert all(n.startswith(("blocks.6.0.", "conv_head.", "bn2.")) for n in result.trainable)
    assert any(n.startswith("blocks.6.0.") for n in changed)
    # batch-norm statistics stay frozen everywhere
    base_buffers = dict(base.model.named_buffers())
    for name, value in result.backbone.model.named_buffers():
        assert np.array_equal(value.numpy(), base_buffers[name].numpy()), name
    assert [e.epoch for e in epochs] == list(range(len(epochs))) and epochs[0].epoch == 0
    best = result.summary["best_epoch"]
    assert result.history[best].val_loss == min(e.val_loss for e in result.history)


def test_trainable_names_counts_blocks(tuned):
    model = tuned[0].backbone.model
    one, two = trainable_names(model, 1), trainable_names(model, 2)
    assert set(one) < set(two)
    assert any(n.startswith("blocks.5.3.") for n in two) and not any(
        n.startswith("blocks.5.") for n in one)
    with pytest.raises(FinetuneError, match="blocks"):
        trainable_names(model, 99)


def test_saved_folder_is_safetensors_with_a_valid_card(tuned, sample_patches):
    _, folder, _ = tuned
    weights = folder / "model.safetensors"
    with open(weights, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    assert "conv_stem.weight" in header and not any(k.startswith("classifier") for k in header)
    card = read_card(folder)
    assert card["name"] == "skin-lite0"
    assert card["base"]["name"] == "efficientnet-lite0"
    assert card["classes"] == ["background", "dermis", "epidermis"]
    names, counts = np.unique(sample_patches["labels"], return_counts=True)
    assert card["per_class"] == dict(zip(names.tolist(), counts.tolist(), strict=True))
    assert card["blocks_unfrozen"] == 1 and card["epochs_run"] >= 1
    assert 0.0 <= card["validation"]["balanced_accuracy"] <= 1.0
    assert card["history"][0]["train_loss"] is None  # epoch 0 is the linear probe
    assert card["weights_sha256"] != card["base"]["weights_sha256"]


def test_reloaded_backbone_has_its_own_identity_and_embeddings(tuned, sample_patches):
    result, folder, _ = tuned
    patches = sample_patches["patches"][:6]
    base = load_backbone(precision="fp32")
    first = load_backbone(str(folder), precision="fp32")
    second = load_backbone(str(folder), precision="fp32")
    assert first.identity()["name"] == "finetuned:skin-lite0"
    assert first.weights_sha256 == read_card(folder)["weights_sha256"] != base.weights_sha256
    a, b = first.embed(patches), second.embed(patches)
    np.testing.assert_array_equal(a, b)  # deterministic
    assert np.abs(a - base.embed(patches)).max() > 1e-2  # not the base network
    # the fused, reloaded network computes what the tuned one did in memory
    np.testing.assert_allclose(a, result.backbone.embed(patches), rtol=1e-3, atol=1e-3)


def test_finetuned_name_lookup_and_listing(tuned, monkeypatch, tmp_path):
    _, folder, _ = tuned
    monkeypatch.setenv("NAPARI_DFL_BACKBONES", str(folder.parent))
    entries = list_finetuned()
    assert [e["name"] for e in entries] == ["skin-lite0"]
    assert entries[0]["base"] == "efficientnet-lite0" and len(entries[0]["classes"]) == 3
    by_name = load_backbone("finetuned:skin-lite0", precision="fp32")
    assert by_name.weights_sha256 == read_card(folder)["weights_sha256"]
    with pytest.raises(FinetunedBackboneError, match="No fine-tuned backbone named"):
        load_backbone("finetuned:absent")
    # what predict does with a head's backbone name and --weights FOLDER
    moved = load_backbone("finetuned:skin-lite0", weights=str(folder))
    assert moved.weights_sha256 == by_name.weights_sha256
    as_weights = load_backbone("efficientnet-lite0", weights=str(folder))  # GUI weights field
    assert as_weights.identity()["name"] == "finetuned:skin-lite0"
    with pytest.raises(FinetunedBackboneError, match="not 'other'"):
        load_backbone("finetuned:other", weights=str(folder))
    monkeypatch.setenv("NAPARI_DFL_BACKBONES", str(tmp_path))
    copy = shutil.copytree(folder, tmp_path / "elsewhere")
    assert register_finetuned(copy) == "finetuned:skin-lite0"
    assert load_backbone("finetuned:skin-lite0").weights_sha256 == by_name.weights_sha256


def test_modified_weights_are_refused(tuned, tmp_path):
    _, folder, _ = tuned
    copy = shutil.copytree(folder, tmp_path / "tampered")
    with open(copy / "model.safetensors", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(FinetunedBackboneError, match="modified"):
        load_backbone(str(copy))
    (copy / "backbone_card.json").write_text("{not json")
    with pytest.raises(FinetunedBackboneError, match="not valid JSON"):
        load_backbone(str(copy))


def test_bad_input_gives_clear_errors(sample_patches, tmp_path):
    from napari_dfl.cli import main

    patches, labels = sample_patches["patches"][:8], sample_patches["labels"][:8]
    with pytest.raises(FinetuneError, match="at least two classes"):
        finetune_patches(patches, np.array(["a"] * 8), sample_patches["groups"][:8])
    with pytest.raises(FinetuneError, match="two groups"):
        finetune_patches(patches, np.array(["a", "b"] * 4), np.array(["g"] * 8))
    with pytest.raises(FinetuneError, match="uint8"):
        finetune_patches(patches.astype(np.float32), labels, sample_patches["groups"][:8])
    with pytest.raises(FinetuneError, match="blocks"):
        FinetuneConfig(blocks=0)
    with pytest.raises(DFLError):
        load_patches([tmp_path / "missing.csv"], PATCH)
    assert main(["finetune", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2


def test_cli_writes_a_backbone_folder(sample_slide_path, tmp_path, capsys):
    from napari_dfl.cli import main

    out = tmp_path / "cli-lite0"
    code = main(["finetune", str(sample_slide_path), "--out", str(out), "--patch-size", "112",
                 "--epochs", "1", "--blocks", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert f"use it with --backbone {out}" in printed.out
    assert "linear probe:" in printed.err and "epoch 1/1" in printed.err
    card = read_card(out)
    assert card["name"] == "cli-lite0" and card["config"]["epochs"] == 1
    assert card["dataset"]["patch"] == {"size": 112, "mpp": 0.5}


def test_refuses_to_overwrite_a_foreign_folder(tuned, tmp_path):
    result, _, _ = tuned
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FinetuneError, match="not a fine-tuned backbone"):
        save_finetuned(result, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_augmentation_is_dihedral_and_stain_only(sample_patches):
    patch = sample_patches["patches"][0]
    forms = {dihedral(patch, k).tobytes() for k in range(8)}
    assert len(forms) == 8  # the eight symmetries of the square are distinct
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(hed_jitter(sample_patches["patches"][:4], 0.0, rng),
                                  sample_patches["patches"][:4])
    out = augment_patches(sample_patches["patches"][:4], rng, stain=0.05)
    assert out.shape == (4, 112, 112, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, sample_patches["patches"][:4])
    # stain jitter moves colours a little, not a lot
    white = np.full((1, 8, 8, 3), 255, np.uint8)
    assert hed_jitter(white, 0.05, rng).min() > 200


def test_pipeline_embeds_with_the_finetuned_backbone(tuned, sample_slide_path, tmp_path):
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.workflows.labelled import embed_labelled

    _, folder, _ = tuned
    settings = Settings(backbone=str(folder), composition=PATCH, store_dir=str(tmp_path))
    data = embed_labelled([sample_slide_path], settings)
    assert data.extractor.name == "finetuned:skin-lite0"
    assert data.extractor.backbone["weights_sha256"] == read_card(folder)["weights_sha256"]
    assert data.embeddings.shape[1] == 1280 and np.isfinite(data.embeddings).all()


@pytest.mark.slow
def test_evidence_quick_run_writes_the_report(tmp_path):
    """benchmarks/evidence.py --quick on 12 CRC images (skipped without the shared data)."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import shared_file

    shared_file("crchisto/nuclei_labels.csv")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "evidence.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--workdir", str(tmp_path / "work"),
         "--doc", str(tmp_path / "evidence.md"), "--images", str(tmp_path / "images")],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    headline = json.loads(done.stdout.strip().splitlines()[-1])
    verdicts = {c["verdict"] for c in headline["claims"]}
    assert len(headline["claims"]) >= 14 and verdicts <= {
        "holds", "does not hold", "not shown", "holds approximately"}
    # the headline: the defaults and select's pick (and the probe's best when the pick kept
    # the defaults instead), each with its accuracy and its time
    assert {"default", "pick"} <= set(headline["headline"]) <= {"default", "pick", "top"}
    for figures in headline["headline"].values():
        assert 0.0 <= figures["balanced_accuracy"] <= 1.0 and figures["seconds"] > 0
    text = (tmp_path / "evidence.md").read_text()
    for section in ("## 0. Headline", "## 1. Gaussian noise", "### 1b. Few labels",
                    "## 2. Composition", "### 2b. The selection's pick", "Regret",
                    "## 3. Head and loss", "## 4. Backbones", "## 5. Deep feature learning",
                    "## 6. Learning curve", "1-minute load average", "select suggested: "):
        assert section in text
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "evidence_backbones.png", "evidence_fields.png", "evidence_learning_curve.png",
        "evidence_noise.png", "evidence_noise_few.png"]
    assert list((tmp_path / "work" / "quick").glob("crc-lite0-half*/backbone_card.json"))


def test_any_timm_family_unfreezes_its_last_groups():
    # timm's group_matcher finds the blocks of families the old name rules missed
    # (ConvNeXt stages, RegNet s1..s4); random initialisation, nothing downloaded.
    import timm

    convnext = timm.create_model("convnext_atto", num_classes=0)
    names = [n for n, _ in convnext.named_parameters()]
    one, two = trainable_names(convnext, 1), trainable_names(convnext, 2)
    assert set(one) == {n for n in names if n.startswith(("stages.3.blocks.1.", "head."))}
    assert set(two) == {n for n in names if n.startswith(("stages.3.", "head."))}
    assert not any(n.startswith(("stem.", "stages.2.")) for n in two)
    with pytest.raises(FinetuneError, match="has 12 blocks"):
        trainable_names(convnext, 13)
    regnet = timm.create_model("regnetx_002", num_classes=0)
    three = trainable_names(regnet, 3)
    assert {n.split(".")[1] for n in three} == {"b5", "b6", "b7"}
    assert all(n.startswith("s4.") for n in three)


def test_finetunes_a_convnext(sample_patches):
    # End to end on a family that was refused before: only the last two groups change.
    config = FinetuneConfig(blocks=2, epochs=1, patience=1, batch_size=16, lr=1e-3,
                            restore_best=False)
    base = load_backbone("convnext_atto", weights="random:3", fuse=False, precision="fp32")
    before = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = finetune_patches(sample_patches["patches"], sample_patches["labels"],
                                  sample_patches["groups"], base="convnext_atto",
                                  weights="random:3", config=config)
    after = dict(result.backbone.model.named_parameters())
    changed = {n for n in after if not np.array_equal(before[n].numpy(),
                                                      after[n].detach().numpy())}
    assert changed and changed <= set(result.trainable)
    assert any(n.startswith("stages.3.blocks.0.") for n in changed)
    assert all(n.startswith(("stages.3.", "head.")) for n in result.trainable)
