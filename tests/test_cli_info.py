"""`napari-dfl info`: human and JSON output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bad_files import huge_untiled, not_an_image, sixteen_bit, truncated
from napari_dfl.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_dfl.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_info_json(sample_slide_path, capsys):
    assert main(["info", str(sample_slide_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mpp"] == pytest.approx(0.499)
    assert summary["levels"][0] == {"width": 2220, "height": 2967, "downsample": 1.0,
                                    "computed": False}
    assert 0.25 < summary["tissue_fraction"] < 0.5
    assert summary["objective_power"] == 20
    assert summary["icc_profile"] is None  # this file embeds no colour profile


def test_an_embedded_colour_profile_is_reported_not_applied(no_mpp_svs_path, capsys):
    from napari_dfl.core.slides.base import describe_icc_profile

    assert main(["info", str(no_mpp_svs_path), "--no-tissue"]) == 0
    out = capsys.readouterr().out
    assert ("colour profile   embedded ICC (sRGB IEC61966-2.1, 3144 bytes): reported, not "
            "applied") in out
    assert main(["info", str(no_mpp_svs_path), "--no-tissue", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["icc_profile"] == {"bytes": 3144, "name": "sRGB IEC61966-2.1"}
    # a damaged profile is still counted, without a name (and without an error)
    assert describe_icc_profile(b"not an icc profile") == {"bytes": 18, "name": None}


def test_info_text_reports_missing_mpp(no_mpp_svs_path, capsys):
    assert main(["info", str(no_mpp_svs_path), "--no-tissue"]) == 0
    out = capsys.readouterr().out
    assert "mpp              unknown" in out and "--mpp" in out


def test_info_json_with_user_mpp(no_mpp_svs_path, capsys):
    assert main(["info", str(no_mpp_svs_path), "--json", "--mpp", "0.25", "--no-tissue"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mpp"] == 0.25 and summary["mpp_source"] == "user"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p, s: p / "missing.svs", "no such file"),
        (lambda p, s: not_an_image(p), "TIFF-family slide"),
        (lambda p, s: truncated(s, p, 0.5), "truncated or damaged"),
        (lambda p, s: sixteen_bit(p), "8-bit RGB"),
        (lambda p, s: huge_untiled(p), "tiled pyramidal TIFF"),
    ],
)
def test_info_errors_are_one_line_without_traceback(make, expected, tmp_path, sample_slide_path):
    result = run_cli("info", str(make(tmp_path, sample_slide_path)))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("napari-dfl: error:") and expected in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_debug_flag_shows_traceback(tmp_path):
    result = run_cli("--debug", "info", str(tmp_path / "missing.svs"))
    assert result.returncode != 0 and "Traceback" in result.stderr
