"""Reports: collect() from a real run directory, exact tables, the Pareto front, escaping,
self-contained HTML (checked byte by byte and in headless Chromium), compare_runs."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from slimkit.cli.main import main
from slimkit.errors import FileFormatError, InvalidArgumentError
from slimkit.report import (
    ReportData,
    StageRow,
    collect,
    compare_runs,
    lineage_rows,
    pareto_front,
    pareto_rows,
    write_report,
)
from slimkit.train.checkpoint import (
    CheckpointMeta,
    OutputExistsError,
    read_checkpoint_meta,
    save_checkpoint,
)

DATA = "shapes:n_train=256,n_test=64,size=16"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"
CHROMIUM = Path("/usr/bin/chromium")

STAGES = [
    {"name": "00 train", "params": 272084, "macs": 10203392, "size_bytes": 1088336,
     "top1": 91.25, "latency_ms": 2.5, "runtime": "onnxruntime", "energy_mj": 0.299},
    {"name": "01 prune", "params": 120000, "macs": 5000000, "size_bytes": 480000,
     "top1": 90.123, "latency_ms": 1.23456, "runtime": "onnxruntime", "energy_mj": 0.5},
    {"name": "02 quantize", "params": 120000, "macs": None, "size_bytes": 150000,
     "top1": 89.5, "latency_ms": 0.8, "runtime": "onnxruntime", "energy_mj": None},
]
CANDIDATES = [
    {"name": "cand-dominated", "macs": 6000000, "size_bytes": 500000, "top1": 85.0,
     "latency_ms": 3.0, "runtime": "onnxruntime"},
    {"name": "cand-fast", "size_bytes": 100000, "top1": 70.0, "latency_ms": 0.5,
     "runtime": "onnxruntime", "extra": {"speedup": 5.0}},
]
SENSITIVITY = {
    "base_top1": 25.0, "base_macs": 10203392, "ratios": [0.25, 0.5], "samples": 64,
    "method": "l2", "input_shape": [3, 16, 16],
    "rows": [
        {"layer": "stages.0.0.conv1.conv", "ratio": 0.25, "top1": 24.0, "drop": 1.0,
         "macs_saved": 0.03},
        {"layer": "stages.0.0.conv1.conv", "ratio": 0.5, "top1": 20.0, "drop": 5.0,
         "macs_saved": 0.06},
        {"layer": "stages.1.0.conv1.conv", "ratio": 0.25, "top1": 25.0, "drop": 0.0,
         "macs_saved": 0.02},
        {"layer": "stages.1.0.conv1.conv", "ratio": 0.5, "top1": 22.5, "drop": 2.5,
         "macs_saved": 0.04},
    ],
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory: `slimkit train` on tiny shapes (checkpoint, metrics, confusion)."""
    out = tmp_path_factory.mktemp("report") / "trained"
    assert main(["train", "-m", "resnet20", "--data", DATA, "--epochs", "1",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pipeline_run(trained_run: Path) -> Path:
    """The trained run plus a recipe runner's pipeline.json and a sensitivity stage folder."""
    out = trained_run.parent / "pipeline"
    shutil.copytree(trained_run, out)
    (out / "01-sensitivity").mkdir()
    (out / "01-sensitivity" / "sensitivity.json").write_text(json.dumps(SENSITIVITY))
    pipeline = {
        "title": "slimkit run: shapes & <b>friends</b>",
        "headline": "3.1x faster, 7.3x smaller, -1.8 pt",
        "stages": STAGES,
        "candidates": CANDIDATES,
        "records": [{"index": 0, "kind": "train"}],  # runner bookkeeping: ignored
        "class_names": ["circle", EVIL, "tri|angle", "cross"],
        "layer_latency": [{"name": "stages.0.0.conv1.conv", "latency_ms": 0.125},
                          {"name": "fc", "latency_ms": 0.01}],
        "notes": ["latency is a quick estimate (30 runs)"],
    }
    (out / "pipeline.json").write_text(json.dumps(pipeline))
    return out


@pytest.fixture(scope="module")
def pipeline_report(pipeline_run: Path) -> dict[str, object]:
    data = collect(pipeline_run)
    md, page = write_report(data, pipeline_run)
    return {"data": data, "md": md, "html": page, "md_text": md.read_text(encoding="utf-8"),
            "html_text": page.read_text(encoding="utf-8")}


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def _images(page: str) -> _Images:
    parser = _Images()
    parser.feed(page)
    return parser


# --- collect() on a real run ----------------------------------------------------------------


def test_collect_reads_the_checkpoint_lineage_and_metrics(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    meta = read_checkpoint_meta(trained_run / "model.safetensors")
    data = collect(trained_run)
    assert [r.name for r in data.stages] == ["train"]
    train = data.stages[0]
    assert train.top1 == metrics["test"]["top1"]
    # counts come from profiling the checkpoint's architecture, and say so
    assert train.params and train.macs and train.size_bytes == 4 * train.params
    assert set(train.extra["filled_from"]) == {"params", "macs", "size_bytes", "energy_mj"}
    assert any("profiled from model.safetensors" in n for n in data.notes)
    # nothing was measured for latency: it stays missing
    assert train.latency_ms is None and train.runtime is None
    assert data.candidates == []  # last.safetensors holds no finished stage
    assert data.confusion == metrics["test"]["confusion"]
    assert data.class_names == meta.class_names
    assert data.confusion_png == str(trained_run / "confusion.png")
    assert data.profile_layers and sum(r["macs"] for r in data.profile_layers) == train.macs
    assert data.info["architecture"] == "resnet20" and data.info["input size"] == "3x16x16"
    json.dumps(data.to_dict())  # JSON-able
    assert ReportData.from_dict(json.loads(json.dumps(data.to_dict()))) == data


def test_train_report_table_is_exact(trained_run: Path, tmp_path: Path) -> None:
    data = collect(trained_run)
    t = data.stages[0]
    md, page = write_report(data, tmp_path / "out")
    text = md.read_text(encoding="utf-8")
    row = (f"| train | {t.params:,} | {t.macs:,} | {t.size_bytes:,} | {t.top1:.2f} | — | — | "
           f"{t.energy_mj:.3f} |")
    assert row in text
    assert "| stage | params | MACs | size (bytes) | top-1 (%) | latency (ms) | runtime | " \
           "energy (mJ) |" in text
    html_text = page.read_text(encoding="utf-8")
    assert f'<td class="num">{t.params:,}</td>' in html_text
    assert '<td class="num">—</td>' in html_text
    _check_markdown_files(md)
    # the trainer's confusion.png is reused as is
    assert (md.parent / "plots" / "confusion.png").read_bytes() == \
        (trained_run / "confusion.png").read_bytes()


def test_other_checkpoints_and_metrics_become_candidates(trained_run: Path,
                                                         tmp_path: Path) -> None:
    from slimkit.models import create_model

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = read_checkpoint_meta(run / "model.safetensors")
    meta.add_stage("prune", params={"ratio": 0.5}, metrics={
        "before": {"params": 10, "macs": 20, "size_bytes": 40, "top1": 50.0,
                   "latency_ms": 2.0},
        "after": {"params": 5, "macs": 8, "size_bytes": 20, "top1": 48.5,
                  "latency_ms": 1.0}})
    model = create_model("resnet20", num_classes=4, small_input=True)
    save_checkpoint(run / "branch" / "model.safetensors", model, meta)
    shutil.copy(run / "model.safetensors", run / "copy.safetensors")  # same lineage: no row
    (run / "sweep").mkdir()
    (run / "sweep" / "metrics.json").write_text(json.dumps(
        {"top1": 40.0, "latency_ms": 0.75, "runtime": "onnxruntime", "size_bytes": 99}))
    (run / "broken.safetensors").write_bytes(b"not a checkpoint")

    data = collect(run)
    assert [r.name for r in data.stages] == ["train"]
    names = {r.name: r for r in data.candidates}
    assert set(names) == {"prune (branch/model.safetensors)", "sweep"}
    prune = names["prune (branch/model.safetensors)"]
    assert (prune.params, prune.macs, prune.size_bytes, prune.top1, prune.latency_ms,
            prune.runtime) == (5, 8, 20, 48.5, 1.0, "torch eager")
    assert names["sweep"].latency_ms == 0.75 and names["sweep"].params is None
    assert any(n.startswith("skipped broken.safetensors") for n in data.notes)


def test_lineage_rows_before_and_after() -> None:
    meta = CheckpointMeta(lineage=[
        {"stage": "prune", "params": {}, "metrics": {
            "before": {"params": 100, "macs": 1000, "size_bytes": 400, "top1": 91.0,
                       "latency_ms": 3.0},
            "after": {"params": 50, "macs": 400, "size_bytes": 200, "top1": 90.0,
                      "latency_ms": None}}},
        {"stage": "train", "params": {}, "metrics": {"test_top1": 90.5, "test_top5": 99.0}},
        {"stage": "prune", "params": {}, "metrics": {
            "before": {"params": 50, "macs": 400, "size_bytes": 200, "top1": 90.4},
            "after": {"params": 30, "macs": 250, "size_bytes": 120, "top1": 89.0}}},
    ])
    rows = lineage_rows(meta, "m.safetensors")
    assert [r.name for r in rows] == ["input model", "prune", "train", "prune (2)"]
    assert (rows[0].params, rows[0].top1, rows[0].latency_ms, rows[0].runtime) == \
        (100, 91.0, 3.0, "torch eager")
    assert (rows[1].params, rows[1].top1, rows[1].latency_ms, rows[1].runtime) == \
        (50, 90.0, None, None)
    # the train stage recorded only its accuracy; the next prune's "before" fills the counts
    assert (rows[2].params, rows[2].macs, rows[2].size_bytes, rows[2].top1) == \
        (50, 400, 200, 90.5)
    assert rows[2].extra["filled_from"]["params"] == "m.safetensors lineage[2].metrics.before"
    assert rows[3].params == 30


# --- the pipeline.json report ---------------------------------------------------------------


def test_pipeline_tables_are_exact(pipeline_report: dict) -> None:
    md, html_text = pipeline_report["md_text"], pipeline_report["html_text"]
    for row in (
        "| 00 train | 272,084 | 10,203,392 | 1,088,336 | 91.25 | 2.500 | onnxruntime | 0.299 |",
        "| 01 prune | 120,000 | 5,000,000 | 480,000 | 90.12 | 1.235 | onnxruntime | 0.500 |",
        "| 02 quantize | 120,000 | — | 150,000 | 89.50 | 0.800 | onnxruntime | — |",
        "| cand-dominated | — | 6,000,000 | 500,000 | 85.00 | 3.000 | onnxruntime | — |",
        "| cand-fast | — | — | 100,000 | 70.00 | 0.500 | onnxruntime | — |",
    ):
        assert row in md, row
    assert ("<tr><td>01 prune</td><td class=\"num\">120,000</td><td class=\"num\">5,000,000</td>"
            "<td class=\"num\">480,000</td><td class=\"num\">90.12</td><td class=\"num\">1.235"
            "</td><td>onnxruntime</td><td class=\"num\">0.500</td></tr>") in html_text
    assert "**3.1x faster, 7.3x smaller, -1.8 pt**" in md
    # pipeline stages are the table: the checkpoint lineage adds no "train" row
    stage_table = md.split("## Stages")[1].split("\n## ")[0]
    assert "| train |" not in stage_table
    data = pipeline_report["data"]
    assert [r.name for r in data.stages] == ["00 train", "01 prune", "02 quantize"]
    assert data.candidates[1].extra == {"speedup": 5.0}
    # per-layer sections, sensitivity and per-class accuracy
    assert "| stages.0.0.conv1.conv | 0.125 |" in md
    assert "| stages.0.0.conv1.conv | 1.00 | 5.00 |" in md
    assert "| cross | 16 | 16 | 100.00 |" in md or "| cross | 16 |" in md
    assert "latency is a quick estimate (30 runs)" in md


def test_pareto_front_of_the_report(pipeline_report: dict) -> None:
    md = pipeline_report["md_text"]
    assert "Pareto front (top-1 vs latency): cand-fast, 02 quantize, 01 prune, 00 train" in md
    assert "Pareto front (top-1 vs size): cand-fast, 02 quantize, 01 prune, 00 train" in md
    assert "Pareto front (top-1 vs MACs): 01 prune, 00 train" in md
    assert "cand-dominated" not in "".join(l for l in md.splitlines() if "Pareto front" in l)


def test_pareto_front_logic() -> None:
    points = [(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0), (2.0, 95.0), (1.0, 89.0)]
    # (3, 94) is dominated by (2, 95); (1, 89) by (1, 90); the duplicate (2, 95) stays
    assert pareto_front(points) == [3, 0, 1, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]
    rows = [StageRow("a", latency_ms=1.0, top1=90.0), StageRow("b", latency_ms=2.0, top1=80.0),
            StageRow("c", latency_ms=None, top1=99.0), StageRow("d", latency_ms=0.5)]
    assert [r.name for r in pareto_rows(rows, "latency_ms")] == ["a"]


def test_html_escapes_all_text(pipeline_report: dict) -> None:
    page = pipeline_report["html_text"]
    assert "<script" not in page.lower()  # neither the class name nor any script of ours
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>slimkit run: shapes &amp; &lt;b&gt;friends&lt;/b&gt;</title>" in page
    assert "<b>" not in page
    assert "tri|angle" in page
    md = pipeline_report["md_text"]
    assert md.startswith("# slimkit run: shapes \\& \\<b\\>friends\\</b\\>\n")
    assert EVIL not in md and r"\<script\>alert(1)\</script\>" in md
    assert r"| tri\|angle | 16 |" in md  # a | in a cell does not split the table


def test_html_is_self_contained_and_every_image_is_a_png(pipeline_report: dict) -> None:
    page = pipeline_report["html_text"]
    parsed = _images(page)
    assert len(parsed.srcs) == 7  # 3 trade-offs, MACs, latency, sensitivity, confusion
    for src in parsed.srcs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            assert img.format == "PNG" and img.width > 100 and img.height > 100
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "Content-Security-Policy" in page


def test_markdown_references_existing_pngs(pipeline_report: dict) -> None:
    md: Path = pipeline_report["md"]
    paths = _check_markdown_files(md)
    assert {p.name for p in paths} == {
        "accuracy_vs_latency.png", "accuracy_vs_size.png", "accuracy_vs_macs.png",
        "layer_macs.png", "layer_latency.png", "sensitivity.png", "confusion.png"}
    # pipeline.json renamed the classes: the trainer's confusion.png is drawn again
    assert (md.parent / "plots" / "confusion.png").read_bytes() != \
        (md.parent / "confusion.png").read_bytes()


def _check_markdown_files(md: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text(encoding="utf-8"))
    paths = []
    for link in links:
        assert not Path(link).is_absolute() and not link.startswith(("http:", "https:"))
        path = md.parent / link
        assert path.is_file(), link
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        paths.append(path)
    return paths


# --- hand-built data, validation, errors ----------------------------------------------------


def test_hand_built_report_without_run_dir(tmp_path: Path) -> None:
    data = ReportData(
        title="hand made",
        stages=[StageRow("fp32", params=1000, top1=80.0, size_bytes=4000),
                StageRow("int8", params=1000, top1=79.0, size_bytes=1000)],
        profile_layers=[{"name": "conv", "type": "Conv2d", "macs": 500, "params": 10}],
        notes=["made by hand"])
    md, page = write_report(data, tmp_path)
    text = md.read_text(encoding="utf-8")
    assert "| fp32 | 1,000 | — | 4,000 | 80.00 | — | — | — |" in text
    assert "Pareto front (top-1 vs size): int8, fp32" in text
    assert "| conv | Conv2d | 10 | 500 | 100.0 |" in text
    assert len(_images(page.read_text(encoding="utf-8")).srcs) == 2
    with pytest.raises(OutputExistsError, match="--force"):
        write_report(data, tmp_path, overwrite=False)


def test_stage_row_validation() -> None:
    row = StageRow.from_dict({"stage": "s", "params": 3.0, "top1": float("nan"), "foo": 1})
    assert (row.name, row.params, row.top1, row.extra) == ("s", 3, None, {"foo": 1})
    with pytest.raises(FileFormatError, match=r"stages\[0\]\.top1 must be a number"):
        ReportData.from_dict({"stages": [{"name": "x", "top1": "n/a"}]}, "pipeline.json")
    with pytest.raises(FileFormatError, match="needs a non-empty string 'name'"):
        StageRow.from_dict({"top1": 1.0})
    with pytest.raises(FileFormatError, match="whole number"):
        StageRow.from_dict({"name": "x", "macs": 1.5})


def test_broken_pipeline_json_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "pipeline.json").write_text(json.dumps({"stages": [{"name": "a",
                                                                    "params": "many"}]}))
    with pytest.raises(FileFormatError) as info:
        collect(tmp_path)
    assert "pipeline.json.stages[0].params" in str(info.value)
    assert "\n" not in str(info.value)
    (tmp_path / "pipeline.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="pipeline.json is not readable JSON"):
        collect(tmp_path)


def test_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="does not exist") as info:
        collect(tmp_path / "nope")
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(InvalidArgumentError, match="holds nothing to report.*--out"):
        collect(tmp_path / "empty")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        collect(tmp_path / "empty" / "notes.txt")
    with pytest.raises(InvalidArgumentError, match="at least two"):
        compare_runs([tmp_path / "empty"], tmp_path / "cmp")


def test_compare_runs(trained_run: Path, pipeline_run: Path, pipeline_report: dict,
                      tmp_path: Path) -> None:
    md, page = compare_runs([trained_run, pipeline_run], tmp_path / "cmp")
    text = md.read_text(encoding="utf-8")
    t = collect(trained_run).stages[-1]
    assert (f"| trained | train | {t.params:,} | {t.macs:,} | {t.size_bytes:,} | "
            f"{t.top1:.2f} | — |") in text
    assert "| pipeline | 02 quantize | 120,000 | — | 150,000 | 89.50 | 0.800 |" in text
    assert "Pareto front (top-1 vs size): pipeline" in text
    assert {p.name for p in _check_markdown_files(md)} == {"compare_accuracy_vs_size.png"}
    srcs = _images(page.read_text(encoding="utf-8")).srcs
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")


# --- a real browser -------------------------------------------------------------------------

# Loads the shipped report.html unchanged in an iframe and records what the page got.
_WRAPPER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>check</title></head><body>
<iframe id="report" src="report.html" width="1200" height="900"></iframe>
<script>
window.addEventListener("load", function () {
  var b = document.body;
  try {
    var d = document.getElementById("report").contentDocument;
    var imgs = Array.prototype.slice.call(d.images);
    b.setAttribute("data-title", d.title);
    b.setAttribute("data-images", String(imgs.length));
    b.setAttribute("data-broken", String(imgs.filter(function (i) {
      return !(i.complete && i.naturalWidth > 0); }).length));
    b.setAttribute("data-tables", String(d.querySelectorAll("table").length));
    b.setAttribute("data-th-bg", getComputedStyle(d.querySelector("th")).backgroundColor);
    b.setAttribute("data-ok", "1");
  } catch (e) {
    b.setAttribute("data-error", String(e));
  }
});
</script></body></html>
"""


class _BodyAttrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.attrs = dict(attrs)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(pipeline_report: dict, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(pipeline_report["html"], site / "report.html")  # the exact bytes shipped
    (site / "check.html").write_text(_WRAPPER, encoding="utf-8")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", (site / "check.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = _BodyAttrs()
    parser.feed(proc.stdout)
    got = parser.attrs
    assert got.get("data-ok") == "1", got.get("data-error") or proc.stdout[-2000:]
    assert got["data-title"] == pipeline_report["data"].title  # type: ignore[attr-defined]
    assert got["data-images"] == "7"
    assert got["data-broken"] == "0"
    assert int(got["data-tables"] or 0) >= 5
    assert got["data-th-bg"] == "rgb(243, 245, 247)"  # the inline CSS passed the CSP
    console = [line for line in proc.stderr.splitlines()
               if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)


def test_report_lists_the_measured_latency_table(tmp_path: Path) -> None:
    """A latency-probed sensitivity table (slimkit compress) adds what each group saves."""
    table = json.loads(json.dumps(SENSITIVITY))
    for row, saved in zip(table["rows"], (0.01, 0.02, 0.05, 0.08), strict=True):
        row["latency_saved"] = saved
    table["latency"] = {"runtime": "onnxruntime", "threads": 2, "int8": True,
                        "reference_ms": 0.649}
    (tmp_path / "sensitivity.json").write_text(json.dumps(table))
    write_report(collect(tmp_path), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Measured latency saved per group" in md
    assert "INT8 onnxruntime latency, batch 1, 2 threads, reference 0.649 ms" in md
    section = md.split("## Measured latency saved per group")[1]
    # most time saved first
    assert section.index("| stages.1.0.conv1.conv | 5.0 | 8.0 |") < \
        section.index("| stages.0.0.conv1.conv | 1.0 | 2.0 |")
    (tmp_path / "sensitivity.json").write_text(json.dumps(SENSITIVITY))  # no latency: no table
    write_report(collect(tmp_path), tmp_path)
    assert "Measured latency saved" not in (tmp_path / "report.md").read_text()
