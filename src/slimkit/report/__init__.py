"""Reports: what a run did, as Markdown and a self-contained HTML page, with matplotlib plots.

Typical use::

    from slimkit.report import collect, write_report, compare_runs

    md, html = write_report(collect("runs/exp1"), "runs/exp1")   # report.md, report.html
    compare_runs(["runs/exp1", "runs/exp2"], "runs/compare")     # compare.md, compare.html

:func:`collect` reads a run directory (checkpoint headers, ``metrics.json`` files,
``sensitivity.json``, ``pipeline.json``; see :mod:`slimkit.report.collect`) into a
:class:`ReportData`; :func:`write_report` renders any ``ReportData`` (collected or hand-built).

``pipeline.json`` (written by the recipe runner into the run directory)
-----------------------------------------------------------------------

One JSON object; every key is optional, unknown keys are ignored::

    {
      "title":    "slimkit run: cifar-mbv2",            # page title
      "headline": "4.1x faster, 6.8x smaller, -0.3 pt", # one line on top
      "stages":     [ROW, ...],   # the pipeline's models in order; when not empty these ARE
                                  # the stage table (checkpoint lineages then add no rows)
      "candidates": [ROW, ...],   # other measured models (search candidates), shown in their
                                  # own table and in the trade-off plots
      "notes":      ["...", ...],                        # listed under "Notes"
      "info":       {"recipe": "cifar.yaml", ...},       # key facts table (strings)
      "sources":    {"confusion": "...", ...},           # captions: where a section came from
      "profile_layers": [{"name": str, "macs": number, "type": str, "params": int}, ...],
      "layer_latency":  [{"name": str, "latency_ms": number}, ...],
      "sensitivity":    {SensitivityResult.to_dict(): "base_top1", "rows": [{"layer",
                         "ratio", "top1", "drop", "macs_saved"}], "samples", ...},
      "confusion":      [[int, ...], ...],   # K x K, rows: true class, columns: predicted
      "confusion_png":  "00-train/confusion.png",   # optional, relative to the run directory
      "class_names":    [str, ...]
    }

    ROW = {
      "name": str,                 # required ("stage" is accepted as its alias)
      "params": int | null,        # parameter count
      "macs": int | null,          # multiply-accumulates, batch 1
      "size_bytes": int | null,    # bytes (fp32 weights, or the exported file)
      "top1": number | null,       # top-1 accuracy in percent
      "latency_ms": number | null, # median batch-1 latency in ms ...
      "runtime": str | null,       # ... measured on this runtime ("onnxruntime")
      "energy_mj": number | null,  # energy estimate per inference in mJ
      "extra": {...}               # anything JSON-able; other unknown keys land here too
    }

``null``, a missing key, NaN or Infinity all mean "not measured" and are shown as "—".
Integral floats are accepted for the counts. A wrong type (a string for ``top1``, a row
without ``name``) is a one-line ``FileFormatError`` naming the path, e.g.
``pipeline.json.stages[2].top1 must be a number or null, got 'n/a'; fix the file``.
"""

from slimkit.report.build import STAGE_COLUMNS, build_report, compare_runs, write_report
from slimkit.report.collect import collect, lineage_rows, measured_values
from slimkit.report.data import ReportData, StageRow
from slimkit.report.pareto import pareto_front, pareto_rows
from slimkit.report.render import MISSING

__all__ = [
    "MISSING",
    "STAGE_COLUMNS",
    "ReportData",
    "StageRow",
    "build_report",
    "collect",
    "compare_runs",
    "lineage_rows",
    "measured_values",
    "pareto_front",
    "pareto_rows",
    "write_report",
]
