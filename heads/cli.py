"""`heads` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

from featheads.core.threads import prepare_threads, threads_from_argv

prepare_threads(threads_from_argv())  # thread counts and passive waiting, before numpy / torch / LightGBM load

import click  # noqa: E402

from featheads.core.clitools import LazyGroup  # noqa: E402

SUBCOMMANDS: dict[str, str] = {"fit": "heads.fit_cli:fit", "predict": "heads.predict_cli:predict",
                               "tune": "heads.tune_cli:tune"}


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(package_name="featheads")
def main():
    """Fit heads (MLP, logistic, LightGBM) on cached features and write predictions to the store."""


if __name__ == "__main__":
    main()
