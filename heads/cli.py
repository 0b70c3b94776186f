"""`heads` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

import click

from featheads.core.clitools import LazyGroup

SUBCOMMANDS: dict[str, str] = {"fit": "heads.fit_cli:fit", "predict": "heads.predict_cli:predict"}


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="featheads")
def main():
    """Fit heads (MLP, logistic, LightGBM) on cached features and write predictions to the store."""


if __name__ == "__main__":
    main()
