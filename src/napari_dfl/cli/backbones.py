"""``napari-dfl backbones``: which backbones this installation can use, and how.

Lists the presets (ready offline from an installed package, downloaded on first use, or
needing a weights file, with the licence of the foundation models' weights) and the
fine-tuned backbones found in ``$NAPARI_DFL_BACKBONES``.
Nothing is loaded or downloaded: only packages and folders are looked at.
"""

from __future__ import annotations

import argparse
import json

from napari_dfl.cli.options import add_sub_command, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = add_sub_command(sub, "backbones",
                             "list the backbones usable here (presets and fine-tuned)",
                             "napari-dfl backbones --json")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the list."""
    from napari_dfl.core.backbones.catalogue import catalogue  # not for --help

    found = catalogue()
    if args.json:
        say(json.dumps(found, indent=2))
        return 0
    say("presets:")
    for item in found["presets"]:
        say(f"  {item['name']:<20} {item['status']}")
        say(f"  {'':<20} {item['description']}")
        if item.get("licence"):
            say(f"  {'':<20} licence: {item['licence']}")
    say(f"fine-tuned (in {found['finetuned_folder']}; `napari-dfl finetune` makes them):")
    for item in found["finetuned"] or [{"name": "(none)"}]:
        extra = "" if "base" not in item else \
            f" from {item['base']}, classes {', '.join(item['classes'])}"
        say(f"  {item['name']}{extra}")
    return 0
