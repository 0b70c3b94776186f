"""`blend apply`: replay a blend spec on a split and write the final predictions to the store."""
from __future__ import annotations

import click


@click.command("apply")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="Blend spec from blend tune.")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--split", required=True, help="Split to blend (every row of it).")
@click.option("--name", default="final", show_default=True, help="Run the predictions are written to.")
def apply(spec_path, store_path, split, name):
    """Blend, smooth and threshold a split exactly as the spec says; write /predictions/<name>/<task>.

    \b
    Example:
      blend apply --spec mtl.json --store s.h5 --split test --name final
    """
    from .apply import apply_spec, headline
    from .spec import read_spec

    spec = read_spec(spec_path)
    metrics = apply_spec(spec, store_path, split, name=name, spec_source=str(spec_path))
    click.echo(f"wrote predictions/{name}/{{{','.join(spec.tasks)}}} for split {split!r} of {store_path}")
    for k, v in headline(spec.task, metrics).items():
        click.echo(f"{k:<7} {v:.4f}")
