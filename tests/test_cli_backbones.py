"""``napari-dfl backbones``: presets with their status, and fine-tuned backbones."""

from __future__ import annotations

import json
import subprocess
import sys

from napari_dfl.cli import main


def write_finetuned(folder, name: str = "crc-lite0") -> None:
    from napari_dfl.core.backbones.finetuned import CARD_FILE, CARD_FORMAT, WEIGHTS_FILE

    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(b"weights")
    card = {"format": CARD_FORMAT, "version": 1, "name": name, "weights_sha256": "0",
            "base": {"name": "efficientnet-lite0", "timm_name": "efficientnet_lite0"},
            "classes": ["tumour", "stroma"], "created": "2026-11-22",
            "validation": {"balanced_accuracy": 0.81}}
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_lists_presets_and_finetuned_backbones(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from napari_dfl.core.backbones import registry as backbones
    from napari_dfl.core.backbones.finetuned import FOLDER_ENV

    write_finetuned(tmp_path / "tuned" / "crc")
    monkeypatch.setenv(FOLDER_ENV, str(tmp_path / "tuned"))
    lite0 = backbones.get_spec("efficientnet-lite0")
    monkeypatch.setitem(backbones._REGISTRY, "absent-package",
                        replace(lite0, name="absent-package", weights="package:no_such_pkg_x"))
    assert main(["backbones", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    status = {p["name"]: p["status"] for p in found["presets"]}
    assert status["efficientnet-lite0"] == "ready offline"
    assert status["absent-package"] == "not installed: pip install no-such-pkg-x"
    assert status["resnet50"].startswith("downloaded on first use")
    [tuned] = found["finetuned"]
    assert tuned["name"] == "finetuned:crc-lite0" and tuned["balanced_accuracy"] == 0.81

    assert main(["backbones"]) == 0
    text = capsys.readouterr().out
    assert "efficientnet-lite0   ready offline" in text and "finetuned:crc-lite0 from" in text


def test_listing_loads_no_model_code():
    code = ("import sys; from napari_dfl.cli import main; main(['backbones', '--json']); "
            "print('torch' in sys.modules, 'timm' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stderr.strip().splitlines()[-1] == "False False"
