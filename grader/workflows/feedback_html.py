"""One results.json as a self-contained HTML page for the student (inline CSS and SVG, no assets).

    html_text = render(results, title="Feedback for ada")

At the top, what to fix: per stage that lost points, each distinct diagnosis once, with
the number of tests it explains and the handout section to read. Then per stage, its
failures first: the score and the feedback lines (a feedback already shown in the stage
is not repeated: it links to the first test that gave it). A tensor or number mismatch
("max abs error 0.31 at index (0, 2): got 0.1, expected 0.41 (tolerance ...)",
"expected shape (2, 4), got (4, 2)") is also shown as a small table. A training curve
is drawn as an inline SVG plot from a test's `extra_data` ({"train_loss": [...],
"val_loss": [...]}) or, failing that, from lines of its output such as
"train_loss: [4.1, 3.2, ...]". The leaderboard entries (the training stage's
validation loss and speed) are a table. Everything from results.json is escaped.
"""

from __future__ import annotations

import html
import re

from grader.engine.handout_sections import section_for

CURVE_KEYS = ("train_loss", "val_loss")
_CURVE_LINE = re.compile(r"\b(train_loss|val_loss)\b[^:=\[\n]*[:=]\s*\[([-+0-9.eE,\s naif]*)\]")
_MISMATCH = re.compile(
    r"(?P<kind>max abs error (?P<error>\S+?)|values differ|(?P<nans>\d+) NaN value\(s\)[^,]*?)"
    r"(?:,? (?:first )?at index (?P<index>\([^)]*\)))?:? \(?got (?P<got>[^,()]+), expected (?P<expected>[^()]+?)"
    r"(?: \(tolerance (?P<tolerance>[^)]*)\))?(?=[\s;,)]|$)")
_SCALAR = re.compile(r"got (?P<got>[^,\s]+), expected (?P<expected>[^\s(),]+)")
_SHAPE = re.compile(r"expected (?P<what>shape|dtype) (?P<expected>\([^)]*\)|\S+), got (?P<got>\([^)]*\)|\S+)")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.summary{color:#555} .total{font-size:1.2em;font-weight:600}
.test{border-left:4px solid #bbb;padding:.3em .8em;margin:.6em 0;background:#fafafa}
.test.passed{border-color:#2e7d32} .test.failed{border-color:#c62828} .test.partial{border-color:#ef6c00}
.fix li{margin:.3em 0} .fix .count,.read{color:#555;font-size:.9em}
.test .head{display:flex;justify-content:space-between;gap:1em} .test .score{white-space:nowrap;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #eee;padding:.5em;margin:.4em 0;font-size:.9em}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f0f0f0} .mismatch td{font-family:ui-monospace,monospace}
svg{background:#fff;border:1px solid #eee} .legend span{margin-right:1em}
"""


def render(results: dict, title: str = "Feedback") -> str:
    """The whole page, as a string."""
    tests = results.get("tests", [])
    total = sum(t.get("score", 0) for t in tests)
    maximum = sum(t.get("max_score", 0) for t in tests)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p class=\"total\">Total: {_n(results.get('score', total))} / {_n(maximum)}</p>"]
    if results.get("output") and results["output"] != "Graded.":
        parts.append(f"<pre class=\"summary\">{_e(results['output'])}</pre>")
    parts.append(_stage_table(tests))
    anchors = {id(t): f"test-{i}" for i, t in enumerate(tests)}
    parts.append(_what_to_fix(tests, anchors))
    for stage, stage_tests in _by_stage(tests).items():
        score = sum(t.get("score", 0) for t in stage_tests)
        most = sum(t.get("max_score", 0) for t in stage_tests)
        parts.append(f"<section class=\"stage\" id=\"stage-{_e(stage)}\"><h2>{_e(stage)}: "
                     f"{_n(score)} / {_n(most)}</h2>")
        shown: dict[str, dict] = {}   # feedback -> the first test of this stage that gave it
        for test in sorted(stage_tests, key=lambda t: not _lost(t)):   # failures first, in order
            output = test.get("output", "")
            first = shown.setdefault(output, test) if _lost(test) and output else test
            parts.append(_test(test, stage, anchors[id(test)],
                               same_as=(first, anchors[id(first)]) if first is not test else None))
        parts.append("</section>")
    if results.get("leaderboard"):
        rows = "".join(f"<tr><td>{_e(e.get('name', ''))}</td><td>{_e(e.get('value', ''))}</td></tr>"
                       for e in results["leaderboard"])
        parts.append(f"<h2>Leaderboard</h2><table><tr><th>measure</th><th>value</th></tr>{rows}</table>")
    if results.get("execution_time") is not None:
        parts.append(f"<p class=\"summary\">Graded in {_n(results['execution_time'])} s.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _lost(test: dict) -> bool:
    return test.get("score", 0) < test.get("max_score", 0) or test.get("status") == "failed"


def _diagnosis(test: dict) -> str:
    """The feedback's first line: what went wrong, in words."""
    return (test.get("output", "").strip().splitlines() or ["failed"])[0]


def _what_to_fix(tests: list[dict], anchors: dict[int, str]) -> str:
    """Per stage that lost points: each distinct diagnosis once, the tests it explains, where to read."""
    items = []
    for stage, stage_tests in _by_stage(tests).items():
        failed = [t for t in stage_tests if _lost(t)]
        if not failed:
            continue
        lost = sum(t.get("max_score", 0) - t.get("score", 0) for t in failed)
        groups: dict[str, list[dict]] = {}
        for test in failed:
            groups.setdefault(_diagnosis(test), []).append(test)
        lines = []
        for diagnosis, group in groups.items():
            section = section_for(stage, group[0].get("name", ""))
            lines.append(f"<li><a href=\"#{anchors[id(group[0])]}\">{_e(diagnosis)}</a>"
                         f" <span class=\"count\">({len(group)} test{'s' * (len(group) > 1)}"
                         f"{', read ' + _e(section) if section else ''})</span></li>")
        items.append(f"<li><a href=\"#stage-{_e(stage)}\">{_e(stage)}</a>: {_n(lost)} point"
                     f"{'s' * (lost != 1)} lost in {len(failed)} test{'s' * (len(failed) > 1)}<ul>"
                     f"{''.join(lines)}</ul></li>")
    return f"<section class=\"fix\"><h2>What to fix</h2><ul>{''.join(items)}</ul></section>" if items else ""


def _by_stage(tests: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for test in tests:
        stage = (test.get("tags") or [test.get("name", "?").split(":")[0]])[0]
        groups.setdefault(stage, []).append(test)
    return groups


def _stage_table(tests: list[dict]) -> str:
    if not tests:
        return ""
    rows = []
    for stage, stage_tests in _by_stage(tests).items():
        score = sum(t.get("score", 0) for t in stage_tests)
        most = sum(t.get("max_score", 0) for t in stage_tests)
        rows.append(f"<tr><td><a href=\"#stage-{_e(stage)}\">{_e(stage)}</a></td>"
                    f"<td>{_n(score)} / {_n(most)}</td></tr>")
    return f"<table class=\"stages\"><tr><th>stage</th><th>score</th></tr>{''.join(rows)}</table>"


def _test(test: dict, stage: str = "", anchor: str = "", same_as: tuple[dict, str] | None = None) -> str:
    score, most = test.get("score", 0), test.get("max_score", 0)
    kind = "passed" if most and score >= most else "partial" if score > 0 else "failed"
    if not most:
        kind = test.get("status", "failed")
    output = test.get("output", "")
    body = []
    if same_as is not None:
        first, first_anchor = same_as
        body.append(f"<p class=\"read\">The same feedback as <a href=\"#{first_anchor}\">"
                    f"{_e(first.get('name', ''))}</a>.</p>")
    elif output and output not in ("passed", "failed"):
        body.append(f"<pre>{_e(output)}</pre>")
        table = mismatch_table(output)
        if table:
            body.append(table)
    curves = find_curves(test)
    if curves:
        body.append(curve_svg(curves))
    section = section_for(stage, test.get("name", "")) if stage and kind != "passed" and same_as is None else None
    if section:
        body.append(f"<p class=\"read\">Read: {_e(section)}</p>")
    ident = f" id=\"{anchor}\"" if anchor else ""
    return (f"<div class=\"test {kind}\"{ident}><div class=\"head\"><span class=\"name\">{_e(test.get('name', ''))}"
            f"</span><span class=\"score\">{_n(score)} / {_n(most)}</span></div>{''.join(body)}</div>")


def mismatch_table(output: str) -> str:
    """A small table of the got/expected values named in `output`, or "" when there are none."""
    rows = []
    for line in output.splitlines():
        match = _MISMATCH.search(line)
        if match:
            what = "NaN values" if match["nans"] else "max abs error" if match["error"] else "values differ"
            rows.append((what, match["index"] or "", match["got"], match["expected"],
                         match["error"] or "", match["tolerance"] or ""))
            continue
        match = _SHAPE.search(line)
        if match:
            rows.append((match["what"], "", match["got"], match["expected"], "", ""))
            continue
        match = _SCALAR.search(line)
        if match:
            rows.append(("value", "", match["got"], match["expected"], "", ""))
    if not rows:
        return ""
    head = "<tr><th>what</th><th>index</th><th>got</th><th>expected</th><th>error</th><th>tolerance</th></tr>"
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows[:10])
    return f"<table class=\"mismatch\">{head}{body}</table>"


def find_curves(test: dict) -> dict[str, list[float]]:
    """{"train_loss": [...], "val_loss": [...]} from the test's extra_data or its output lines."""
    extra = test.get("extra_data") or {}
    curves = {k: _floats(extra[k]) for k in CURVE_KEYS if isinstance(extra.get(k), list)}
    if not curves:
        for match in _CURVE_LINE.finditer(test.get("output", "")):
            curves[match[1]] = _floats(match[2].split(","))
    return {k: v for k, v in curves.items() if len(v) >= 2}


def _floats(values) -> list[float]:
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number and abs(number) != float("inf"):
            out.append(number)
    return out


def curve_svg(curves: dict[str, list[float]], width: int = 480, height: int = 200) -> str:
    """An inline SVG line plot, x = position in each curve scaled to the same width."""
    colours = {"train_loss": "#1565c0", "val_loss": "#c62828"}
    pad = 36
    values = [v for curve in curves.values() for v in curve]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    lines = []
    for name, curve in curves.items():
        step = (width - 2 * pad) / max(1, len(curve) - 1)
        points = " ".join(f"{pad + i * step:.1f},{height - pad - (v - low) / span * (height - 2 * pad):.1f}"
                          for i, v in enumerate(curve))
        lines.append(f"<polyline fill=\"none\" stroke=\"{colours.get(name, '#555')}\" stroke-width=\"1.5\" "
                     f"points=\"{points}\"><title>{_e(name)}</title></polyline>")
    axes = (f"<line x1=\"{pad}\" y1=\"{height - pad}\" x2=\"{width - pad}\" y2=\"{height - pad}\" stroke=\"#999\"/>"
            f"<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{height - pad}\" stroke=\"#999\"/>"
            f"<text x=\"2\" y=\"{pad + 4}\" font-size=\"10\">{high:.3g}</text>"
            f"<text x=\"2\" y=\"{height - pad + 4}\" font-size=\"10\">{low:.3g}</text>"
            f"<text x=\"{width / 2:.0f}\" y=\"{height - 8}\" font-size=\"10\" text-anchor=\"middle\">"
            f"training progress</text>")
    legend = "".join(f"<span style=\"color:{colours.get(n, '#555')}\">&#9632; {_e(n)}</span>" for n in curves)
    return (f"<div class=\"curve\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
            f"role=\"img\" aria-label=\"training curve\">{axes}{''.join(lines)}</svg>"
            f"<div class=\"legend\">{legend}</div></div>")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _n(value) -> str:
    try:
        return f"{round(float(value), 4):g}"
    except (TypeError, ValueError):
        return _e(value)
