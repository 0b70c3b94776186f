"""`blend` command group. Subcommands live in their own modules, imported when used."""
from __future__ import annotations

from featheads.core.threads import prepare_threads, threads_from_argv

prepare_threads(threads_from_argv())  # thread counts and OpenMP waiting, before numpy / torch / LightGBM load

from featheads.core.clitools import command_group  # noqa: E402  (after prepare_threads)

SUBCOMMANDS: dict[str, str] = {
    "tune": "blend.tune_cli:tune",
    "apply": "blend.apply_cli:apply",
    "submit": "blend.submit_cli:submit",
    "report": "blend.report_cli:report",
}

main = command_group(
    "Tune blends, per-AU thresholds and smoothing with Optuna; apply them; write submissions.", SUBCOMMANDS,
)


if __name__ == "__main__":
    main()
