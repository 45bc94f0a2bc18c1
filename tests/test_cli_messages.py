"""The CLI speaks to people: every option explained, an example per command, a version,
each warning once on one line, and a slide without pixel size told once."""

from __future__ import annotations

import argparse
import subprocess
import sys
import warnings

from napari_dfl._version import __version__
from napari_dfl.cli import build_parser, main, one_line_warnings


def sub_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_has_an_example_and_every_option_a_help_text():
    commands = sub_parsers()
    assert {"demo", "info", "embed", "train", "predict"} <= set(commands)
    for name, parser in commands.items():
        assert f"napari-dfl {name}" in (parser.epilog or ""), f"{name}: no example"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), \
                f"{name} {action.option_strings or action.dest}: no help text"


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"napari-dfl {__version__}"


def test_warnings_print_once_on_one_line(capsys):
    with one_line_warnings():
        for _ in range(3):
            warnings.warn("3 region(s) cover no candidate tile\n  and yield no sample",
                          UserWarning, stacklevel=1)
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == ("napari-dfl: warning: 3 region(s) cover no candidate tile and yield no "
                   "sample\n")


def test_a_slide_without_pixel_size_is_told_once(no_mpp_svs_path, tmp_path):
    done = subprocess.run([sys.executable, "-m", "napari_dfl", "embed", str(no_mpp_svs_path),
                           "--stores", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    told = [line for line in done.stderr.splitlines() if "pixel size" in line]
    assert len(told) == 1 and "--mpp" in told[0], done.stderr
    assert "warnings.warn" not in done.stderr and "the others are done" not in done.stderr


def test_values_out_of_range_are_refused_before_any_work(sample_slide_path, tmp_path, capsys):
    import pytest

    cases = {("--batch-size", "0"): "batch size", ("--batch-size", "-3"): "batch size",
             ("--patch-size", "100000"): "patch size", ("--min-tissue", "2"): "min tissue",
             ("--min-tissue", "nan"): "min tissue"}
    for (option, value), what in cases.items():
        with pytest.raises(SystemExit) as stop:
            main(["embed", str(sample_slide_path), "--stores", str(tmp_path), option, value])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert what in err and value in err, err
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_a_run_that_embeds_nothing_says_so_and_fails(tmp_path, capsys):
    import numpy as np
    import tifffile

    glass = tmp_path / "glass.tiff"  # a real tiled slide of white glass, 0.5 µm/px
    tifffile.imwrite(glass, np.full((1024, 1024, 3), 245, np.uint8), tile=(256, 256),
                     photometric="rgb", resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER")
    code = main(["embed", str(glass), "--stores", str(tmp_path / "stores"), "--patch-size",
                 "112", "--min-tissue", "0.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "nothing was embedded" in err and "--min-tissue" in err
