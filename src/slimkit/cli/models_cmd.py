"""``slimkit models``: the zoo with params and MACs at each model's default resolution."""

from __future__ import annotations

import sys
from typing import Any

import torch
import typer

from slimkit.cli._output import console, fmt_count, print_json, table
from slimkit.errors import InvalidArgumentError


def zoo_rows(pattern: str = "*", builtin_only: bool = False) -> list[dict[str, Any]]:
    """Params and MACs of every model matching ``pattern`` (built on the meta device)."""
    from slimkit.analysis import count_macs, count_params
    from slimkit.models import create_model, get_model_entry, list_models

    rows = []
    for name in list_models(pattern, builtin_only=builtin_only):
        entry = get_model_entry(name)
        with torch.device("meta"):
            model = create_model(name).eval()
            x = torch.zeros(1, *model.pretrained_cfg["input_size"])
        pub = entry.published
        rows.append({
            "name": name,
            "family": entry.family,
            "aliases": list(entry.aliases),
            "input_size": entry.input_size,
            "params": count_params(model),
            "macs": count_macs(model, x),
            "published_params": pub.params if pub else None,
            "published_macs": pub.macs if pub else None,
            "published_top1": pub.top1 if pub else None,
            "description": entry.description,
        })
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The zoo as a Markdown table (what the README shows)."""
    lines = ["| model | family | input | params | MACs | published params / MACs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        pub = (f"{fmt_count(r['published_params'])} / {fmt_count(r['published_macs'])}"
               if r["published_params"] else "")
        alias = f" ({', '.join(r['aliases'])})" if r["aliases"] else ""
        lines.append(f"| `{r['name']}`{alias} | {r['family']} | {r['input_size']} | "
                     f"{fmt_count(r['params'])} | {fmt_count(r['macs'])} | {pub} |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        pattern: str = typer.Argument("*", help="Shell pattern or substring, e.g. 'mobilenet*'."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        markdown: bool = typer.Option(False, "--markdown",
                                      help="A Markdown table (the README's zoo table)."),
    ) -> None:
        """List the architecture zoo: params and MACs at each model's default resolution."""
        rows = zoo_rows(pattern)
        if not rows:
            raise InvalidArgumentError(
                f"no model matches {pattern!r}; run `slimkit models` to see them all"
            )
        if as_json:
            print_json(rows)
            return
        if markdown:
            sys.stdout.write(markdown_table(rows))
            return
        t = table(None, [("model", "left"), ("family", "left"), ("input", "right"),
                         ("params", "right"), ("MACs", "right"), ("published params / MACs", "right"),
                         ("ImageNet top-1", "right")])
        for r in rows:
            pub = (f"{fmt_count(r['published_params'])} / {fmt_count(r['published_macs'])}"
                   if r["published_params"] else "")
            top1 = f"{r['published_top1']:.1f}" if r["published_top1"] else ""
            name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
            t.add_row(name, r["family"], str(r["input_size"]), fmt_count(r["params"]),
                      fmt_count(r["macs"]), pub, top1)
        console.print(t)
        console.print(f"{len(rows)} models. MACs = multiply-accumulates of conv and linear "
                      "layers (FlopCounterMode / 2); top-1 is the published reference "
                      "(slimkit ships no ImageNet weights).")
