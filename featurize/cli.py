"""`featurize` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

import click

from featheads.core.clitools import LazyGroup

SUBCOMMANDS = {
    "run": "featurize.run_cli:run",
    "openface": "featurize.openface_cli:openface",
    "sr": "featurize.sr_cli:sr",
    "demo": "featheads.app.demo:demo",
    "backbones": "featurize.backbones_cli:backbones",
}


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="featheads")
def main():
    """Run frozen emotion CNNs over face images once and cache their features in a store."""


if __name__ == "__main__":
    main()
