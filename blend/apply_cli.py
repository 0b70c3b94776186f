"""`blend apply`: replay a blend spec on a split and write the final predictions to the store."""
from __future__ import annotations

import click

from featheads.core.clitools import AliasedOption

from store.options import wait_option


@click.command("apply")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="Blend spec from blend tune.")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--split", required=True, help="Split to blend (every row of it).")
@click.option("--run", "name", cls=AliasedOption, aliases=("--name",), default="final", show_default=True,
              help="Prediction run the blended predictions are written to.")
@click.option("--overwrite", is_flag=True, help="Replace the predictions of --run if the store has them.")
@wait_option
def apply(spec_path, store_path, split, name, overwrite):
    """Blend, smooth and threshold a split exactly as the spec says; write /predictions/<name>/<task>.

    \b
    Example:
      blend apply --spec mtl.json --store s.h5 --split test --run final
    """
    from featheads.core.errors import UserError
    from store import FeatureStore

    from .apply import apply_spec, headline
    from .spec import read_spec

    spec = read_spec(spec_path)
    if not overwrite and name not in {n for p in spec.tasks.values() for n in p.weights}:
        import numpy as np

        with FeatureStore.open(store_path) as st:
            rows = st.rows(split)
            held = [t for t in st.runs().get(name, []) if t in spec.tasks
                    and len(rows) and np.isfinite(st.read_predictions(name, t, rows)).any()]
        if held:
            raise UserError(f"{store_path}: prediction run {name!r} already holds {', '.join(held)} predictions "
                            f"for split {split!r}; pass --overwrite to replace them (or --run another name)")

    metrics = apply_spec(spec, store_path, split, name=name, spec_source=str(spec_path))
    click.echo(f"wrote predictions/{name}/{{{','.join(spec.tasks)}}} for split {split!r} of {store_path}")
    for k, v in headline(spec.task, metrics).items():
        click.echo(f"{k:<7} {v:.4f}")
