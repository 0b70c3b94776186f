"""`featurize backbones [NAME]`: the backbone registry, and whether each one's weights are cached."""
from __future__ import annotations

import click


def _cached(spec) -> str:
    from featurize.weights import cache_dir

    if spec.filename is None:
        return "-"
    return "yes" if (cache_dir() / spec.filename).is_file() else "no"


def _logits(spec, width: int = 60) -> str:
    text = ",".join(spec.logit_names)
    return f"{spec.num_logits}: {text if len(text) <= width else text[: width - 3] + '...'}"


@click.command()
@click.argument("name", required=False)
def backbones(name):
    """List the registered backbones (input size, embedding size, logits, weights URL, cached or not).

    With NAME (a registered name or timm:<timm model name>), show that backbone's full spec and where
    its weights are looked for. Weights are cached in $FEATHEADS_CACHE (default ~/.cache/featheads).

    \b
    Example:
      featurize backbones enet_b0_8_va_mtl
    """
    from featurize.backbones import get_spec, list_backbones
    from featurize.weights import cache_dir

    if name is not None:
        spec = get_spec(name)
        for key, value in spec.identity().items():
            click.echo(f"{key:16s} {value}")
        click.echo(f"{'url':16s} {spec.url or '-'}")
        where = cache_dir() / spec.filename if spec.filename else "(random init, seed 0, unless --weights)"
        click.echo(f"{'weights':16s} {where} (cached: {_cached(spec)})")
        if spec.description:
            click.echo(f"{'description':16s} {spec.description}")
        return
    rows = [("name", "input", "emb", "logits", "cached", "url")]
    for n in list_backbones():
        s = get_spec(n)
        gray = " gray" if s.grayscale else ""
        rows.append((n, f"{s.input_size}{gray}", str(s.embedding_dim), _logits(s), _cached(s), s.url or "-"))
    rows.append(("timm:<name>", "cfg", "-", "by index", "-", "any timm model; random init unless --weights"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    click.echo(f"\ncache folder: {cache_dir()} (set $FEATHEADS_CACHE to change it)")
