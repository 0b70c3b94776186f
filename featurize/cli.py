"""`featurize` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

from featheads.core.clitools import command_group

SUBCOMMANDS = {
    "run": "featurize.run_cli:run",
    "openface": "featurize.openface_cli:openface",
    "sr": "featurize.sr_cli:sr",
    "demo": "featheads.app.demo:demo",
    "backbones": "featurize.backbones_cli:backbones",
    "faces": "featurize.faces_cli:faces",
    "faces-ingest": "featurize.faces_cli:faces_ingest",
    "finetune": "featurize.finetune_cli:finetune",
}

main = command_group("Run frozen emotion CNNs over face images once and cache their features in a store.", SUBCOMMANDS)


if __name__ == "__main__":
    main()
