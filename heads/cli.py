"""`heads` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

from featheads.core.threads import prepare_threads, threads_from_argv

prepare_threads(threads_from_argv())  # thread counts and OpenMP waiting, before numpy / torch / LightGBM load

from featheads.core.clitools import command_group  # noqa: E402  (after prepare_threads)

SUBCOMMANDS: dict[str, str] = {"fit": "heads.fit_cli:fit", "predict": "heads.predict_cli:predict",
                               "tune": "heads.tune_cli:tune"}

main = command_group(
    "Fit heads (MLP, logistic, LightGBM) on cached features and write predictions to the store.", SUBCOMMANDS,
)


if __name__ == "__main__":
    main()
