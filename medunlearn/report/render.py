"""render_report: a checkpoint directory -> report.html (self-contained), report.md, report.json.

The first section is the Verdict (report.verdict: every acceptance check per policy and for a merged model,
and one decision line); the rest follow the FDA PCCP skeleton: Description of Modification, Modification
Protocol, Impact Assessment, Plots (incl. the stop / guard trace), Limitations. report.json carries the same
verdict under "verdict" so runbooks can gate on ``verdict.decision``. HTML text is escaped; plots are inline
base64 PNG data URIs; nothing is fetched from the network. A final PHI scrub refuses to write anything that
matches the deny-list.
"""
from __future__ import annotations

import base64
import html
import json
import string
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from medunlearn.attest import verify_run
from medunlearn.commit import claim_files, file_set, output_path
from medunlearn.errors import DataError, OutputExistsError
from medunlearn.fileio import read_json
from medunlearn.report import content as C
from medunlearn.report.phi import compile_patterns, scrub_check, strip_identifying
from medunlearn.report.trace import trace_figure
from medunlearn.report.verdict import PASS, build_verdict, verdict_table

SYNTHETIC_NOTE = ("SYNTHETIC DATA: every number in this report comes from synthetic images. It says nothing "
                  "about performance on patients and must not be used for clinical decisions.")
LIMITATIONS = (
    "Unlearning is judged empirically (forget/retain/test accuracy, membership inference); it is not a formal "
    "privacy guarantee unless a certificate below says otherwise, and a single-model MIA is only a sanity check.",
    "The retrained reference is the gold standard; without one, Avg-Gap and agreement cannot be computed.",
    "Subgroup (device / site) accuracies on small groups are noisy; read them with their n.",
    "Results hold for the cohort, rule and seeds listed here; other scanners, sites or label mixes may differ.",
    "The model is a decision-support component; intended use, clinical validation and monitoring remain the "
    "deployer's responsibility.",
)


def evaluate_command(run_dir: Path, meta: Mapping[str, Any]) -> str:
    """The command that writes the evaluations a report needs for this checkpoint."""
    merge = meta.get("merge") if isinstance(meta.get("merge"), Mapping) else None
    if str(meta.get("kind")) == "merged" and merge:
        runs = " ".join(str(r.get("path")) for r in merge.get("runs", []) if isinstance(r, Mapping)) or "RUN ..."
        base = (merge.get("base") or {}).get("path") if isinstance(merge.get("base"), Mapping) else None
        return (f"medunlearn merge {runs} --base {base or 'BASE'} --method {merge.get('method', 'ties')} "
                f"--cohort COHORT.csv --out {run_dir} --overwrite")
    return (f"medunlearn evaluate --model {run_dir} --cohort COHORT.csv <the run's forget rule, e.g. --device X> "
            f"--original BASE --out {run_dir / 'metrics.json'}")


def _load(run_dir: Path) -> tuple[dict, dict, dict]:
    if not run_dir.is_dir():
        raise DataError(f"Expected a run or merged checkpoint directory, but got {str(run_dir)!r}.")
    meta = read_json(run_dir / "meta.json")
    if not isinstance(meta, dict):
        raise DataError(f"Expected meta.json to hold a JSON object, but got {type(meta).__name__}.")
    if not (run_dir / "metrics.json").is_file():
        kind = "merged checkpoint" if meta.get("kind") == "merged" else f"{meta.get('kind', 'model')} checkpoint"
        raise DataError(f"Expected evaluations (metrics.json) in {run_dir}, but this {kind} has none, so there is "
                        f"nothing to report. Write them with: {evaluate_command(run_dir, meta)}")
    metrics = read_json(run_dir / "metrics.json")
    prov = read_json(run_dir / "provenance.json") if (run_dir / "provenance.json").is_file() else {}
    for name, doc in (("meta.json", meta), ("metrics.json", metrics), ("provenance.json", prov)):
        if not isinstance(doc, dict):
            raise DataError(f"Expected {name} to hold a JSON object, but got {type(doc).__name__}.")
    return strip_identifying(meta), strip_identifying(metrics), strip_identifying(prov)


def verify_inputs(run_dir: Path, meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """Load the weights the report describes (safetensors only, finite, matching meta.json) and check that
    metrics.json belongs to them and to the same rule(s). Returns the weights' sha256."""
    from medunlearn.models.checkpoint import load_checkpoint, model_sha256

    load_checkpoint(run_dir)  # refuses pickles, corrupt or non-finite weights, architecture mismatches
    sha = model_sha256(run_dir)
    got_sha = metrics.get("model_sha256")
    if got_sha and got_sha != sha:
        raise DataError(f"Expected metrics.json to describe the weights in {run_dir.name} (sha256 {sha[:12]}), but it "
                        f"was computed for {str(got_sha)[:12]}; re-run evaluate on this model.")
    if meta.get("kind") == "merged":
        pols = C.policies(meta)
        want = sorted(p["rule"] for p in pols)
        got = sorted(metrics.get("policies") or {})
        if got and got != want and got != sorted(p["name"] for p in pols):
            raise DataError(f"Expected metrics.json to evaluate the merged policies {want}, but it evaluates {got}.")
    else:
        want_rule, got_rule = meta.get("rule_text"), metrics.get("rule_text")
        if want_rule and got_rule and want_rule != got_rule:
            raise DataError(f"Expected metrics.json to evaluate this run's rule {want_rule!r}, but it evaluates "
                            f"{got_rule!r}; re-run evaluate with the run's rule.")
    return sha


def check_pass_is_attested(run_dir: Path, verdict: Mapping[str, Any], attestation: Mapping[str, Any],
                           meta: Mapping[str, Any]) -> None:
    """A PASS needs a verified signature and a run that recorded itself as accepted."""
    if verdict.get("decision") != PASS:
        return
    if attestation.get("state") != "verified":
        raise DataError(f"Expected the PASS of {run_dir.name} to carry a verified signature (metrics.json "
                        f"'attestation'), but it is {attestation.get('state')}; re-run forget/merge.")
    if meta.get("accepted") is False:
        raise DataError(f"Expected an accepted run for a PASS, but {run_dir.name}'s meta.json says accepted: "
                        f"{meta.get('accepted')!r}.")


def build_sections(meta: Mapping[str, Any], metrics: Mapping[str, Any], prov: Mapping[str, Any],
                   run_dir: Path | None = None) -> list[dict]:
    """The report as a list of sections (see report.content for the block types); the Verdict comes first."""
    verdict = build_verdict(meta, metrics)
    kind = str(meta.get("kind", "unlearned"))
    label = "merged" if kind == "merged" else "unlearned"
    pols = C.policies(meta)
    desc: list[dict[str, Any]] = [{
        "type": "p", "text": f"This {label} model changes the deployed base model (sha256 "
        f"{str(meta.get('base_sha256') or 'not recorded')[:16]}) by forgetting {len(pols)} data policy(ies)."}]
    for p in pols:
        counts = p["counts"] if isinstance(p["counts"], Mapping) else {}
        rows = [["rule", p["rule"]], ["method", C.fmt(p["method"])], ["goal", C.fmt(p["goal"])]]
        rows += [[f"{k} removed", C.fmt(counts.get(k))] for k in C.COUNT_KEYS]
        rows += [[str(k), C.fmt(v)] for k, v in counts.items() if k not in C.COUNT_KEYS]
        desc.append({"type": "kv", "title": f"Policy: {p['name']}", "rows": rows})
    merge = meta.get("merge") if isinstance(meta.get("merge"), Mapping) else {}
    cfg = merge.get("config") if merge else meta.get("config")
    method = merge.get("method") if merge else (meta.get("method") or C.get(meta, "config.method"))
    proto_rows = [["method", C.fmt(method)],
                  ["seed", C.fmt(meta.get("seed", prov.get("seed")))],
                  ["code version", C.fmt(meta.get("code_version") or prov.get("code_version"))],
                  ["created", C.fmt(prov.get("created"))],
                  ["method wall time (s)", C.fmt(meta.get("wall_time_s") or metrics.get("wall_time_s"))]]
    if merge:
        proto_rows.append(["merge weights", C.fmt(merge.get("weights"))])
    protocol = [{"type": "kv", "title": "Method and run", "rows": proto_rows}]
    if isinstance(cfg, Mapping) and cfg:
        protocol.append({"type": "kv", "title": "Hyperparameters",
                         "rows": [[str(k), C.fmt(v)] for k, v in cfg.items()]})
    hashes = dict(prov.get("input_hashes") or {})
    if meta.get("_model_sha256"):
        hashes = {"model (these weights)": meta["_model_sha256"], **hashes}
    for key in ("base_sha256", "cohort_hash", "split_hash"):
        if meta.get(key):
            hashes.setdefault(key, meta[key])
    if hashes:
        protocol.append({"type": "kv", "title": "Input hashes", "rows": [[k, str(v)] for k, v in hashes.items()]})
    att = meta.get("_attestation")
    if isinstance(att, Mapping) and att.get("state") != "no verdict":
        rows = [["state", str(att.get("state"))], ["key", str(att.get("key") or "none")],
                ["key id", str(att.get("key_id") or "none")]]
        protocol.append({"type": "kv", "title": "Signature of the verdict (HMAC-SHA256 over meta.json, the "
                         "acceptance record and the weights' sha256)", "rows": rows})
    if isinstance(prov.get("environment"), Mapping):
        protocol.append({"type": "kv", "title": "Environment",
                         "rows": [[k, str(v)] for k, v in prov["environment"].items()]})
    impact, images = [], []
    for title, m in C.metric_sets(metrics):
        impact.append({"type": "h3", "text": title})
        impact.append(C.impact_table(m, label))
        for key, lab in (("per_device", "device"), ("per_site", "site")):
            table = C.group_table(m.get(key), lab)
            if table:
                impact += [{"type": "p", "text": f"Accuracy per {lab} ({label} model)."}, table]
        images += C.figures(title, m)
    trace = trace_figure(run_dir, metrics.get("acceptance")) if run_dir is not None else None
    if trace is not None:
        images.insert(0, trace)
    log_images, log_tables = C.log_figures(meta, metrics)
    impact += log_tables
    images += log_images
    limits = list(LIMITATIONS)
    if not any(isinstance(m.get("reference"), Mapping) for _, m in C.metric_sets(metrics)):
        limits.insert(0, "No retrained reference was evaluated, so the gap to the gold standard is unknown.")
    return [
        {"title": "Verdict", "blocks": [verdict_table(verdict)], "verdict": verdict},
        {"title": "Description of Modification", "blocks": desc},
        {"title": "Modification Protocol", "blocks": protocol},
        {"title": "Impact Assessment", "blocks": impact},
        {"title": "Plots", "blocks": images or [{"type": "p", "text": "No plottable metrics were recorded."}]},
        {"title": "Limitations", "blocks": [{"type": "list", "items": limits}]},
    ]


def _html_verdict(b: Mapping[str, Any]) -> str:
    e = html.escape
    css = {"PASS": "pass", "FAIL": "fail", "NOT EVALUATED": "na"}
    head = "".join(f"<th>{e(c)}</th>" for c in b["columns"])
    def cell(c: Mapping[str, Any]) -> str:
        if "value" in c:  # a check: value, requirement, PASS / FAIL on their own lines
            inner = (f'<span class="v">{e(c["value"])}</span><br><span class="req">required {e(c["required"])}</span>'
                     f'<br><b>{e(c["result"])}</b>')
        else:
            inner = e(c["text"])
        return f'<td class="{css.get(c["result"], "")}">{inner}</td>'

    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in b["rows"])
    notes = "".join(f"<li>{e(n)}</li>" for n in b.get("notes", []))
    return (f'<table class="verdict"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="decision {css.get(b["decision"], "")}">{e(b["summary"])}</p>'
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def _html_block(b: Mapping[str, Any]) -> str:
    e = html.escape
    if b["type"] == "verdict":
        return _html_verdict(b)
    if b["type"] == "p":
        return f"<p>{e(b['text'])}</p>"
    if b["type"] == "h3":
        return f"<h3>{e(b['text'])}</h3>"
    if b["type"] == "list":
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in b["items"]) + "</ul>"
    if b["type"] == "image":
        data = base64.b64encode(b["png"]).decode("ascii")
        return (f'<figure><img alt="{e(b["title"])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(b['title'])}</figcaption></figure>")
    cols = b.get("columns") or ["item", "value"]
    head = f"<h3>{e(b['title'])}</h3>" if b.get("title") else ""
    rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b["rows"])
    heads = "".join(f"<th>{e(c)}</th>" for c in cols)
    return head + f"<table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>"


def to_html(title: str, subtitle: str, sections: list[dict], synthetic: bool) -> str:
    tpl = resources.files("medunlearn.report").joinpath("templates")
    page = string.Template(tpl.joinpath("report.html").read_text(encoding="utf-8"))
    html_sections = [f'<section id="s{i}"><h2>{html.escape(s["title"])}</h2>'
                     + "".join(_html_block(b) for b in s["blocks"]) + "</section>" for i, s in enumerate(sections)]
    first = html_sections.pop(0) if sections and sections[0]["title"] == "Verdict" else ""  # verdict first
    body = "".join(html_sections)
    return page.substitute(
        verdict=first, title=html.escape(title), subtitle=html.escape(subtitle),
        css=tpl.joinpath("report.css").read_text(encoding="utf-8"),
        banner=f'<div class="banner" role="alert">{html.escape(SYNTHETIC_NOTE)}</div>' if synthetic else "",
        toc="".join(f'<li><a href="#s{i}">{html.escape(s["title"])}</a></li>' for i, s in enumerate(sections)),
        body=body)


def _md_text(x: Any) -> str:
    """Text for Markdown: HTML in inputs (e.g. a tampered meta.json) is shown, never rendered."""
    return html.escape(str(x), quote=False).replace("\n", " ")


def _md_cell(x: Any) -> str:
    return _md_text(x).replace("|", "\\|")


def to_markdown(title: str, subtitle: str, sections: list[dict], synthetic: bool) -> str:
    out = [f"# {_md_text(title)}", "", f"_{_md_text(subtitle)}_", ""]
    if synthetic:
        out += [f"> **{SYNTHETIC_NOTE}**", ""]
    for s in sections:
        out += [f"## {s['title']}", ""]
        for b in s["blocks"]:
            if b["type"] in ("p", "h3"):
                out += [("### " if b["type"] == "h3" else "") + _md_text(b["text"]), ""]
            elif b["type"] == "list":
                out += [f"- {_md_text(i)}" for i in b["items"]] + [""]
            elif b["type"] == "image":
                out += [f"- Figure: {_md_text(b['title'])} (embedded in report.html)"]
            elif b["type"] == "verdict":
                out += ["| " + " | ".join(map(_md_cell, b["columns"])) + " |", "|" + "---|" * len(b["columns"])]
                out += ["| " + " | ".join(_md_cell(f"**{c['text']}**" if c["text"] in ("PASS", "FAIL") else c["text"])
                                          for c in r) + " |" for r in b["rows"]]
                out += ["", f"**{_md_text(b['summary'])}**", ""]
                out += [f"- {_md_text(n)}" for n in b.get("notes", [])] + [""]
            else:
                cols = b.get("columns") or ["item", "value"]
                out += ([f"### {_md_text(b['title'])}", ""] if b.get("title") else []) + [
                    "| " + " | ".join(map(_md_cell, cols)) + " |", "|" + "---|" * len(cols)]
                out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b["rows"]] + [""]
        out.append("")
    return "\n".join(out)


def render_report(run_dir: str | Path, out_dir: str | Path | None = None, overwrite: bool = False,
                  deny_patterns: Sequence[str] | None = None, pdf: bool = False) -> dict[str, Path]:
    """Write report.html / report.md / report.json (and report.pdf when `pdf` and a browser is available)
    for a run or merged checkpoint. Returns their paths; report.json["pdf"] says whether a PDF was written.

    out_dir defaults to run_dir. Refuses to replace existing reports unless `overwrite` (OutputExistsError),
    and refuses to write anything if the PHI deny-list matches (MedUnlearnError).
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    paths = {k: output_path(out / f"report.{k}") for k in ("json", "md", "html", "pdf")}  # report.json: the gate
    try:
        with claim_files(paths.values(), overwrite=overwrite):
            written = _render(run_dir, paths, deny_patterns, pdf)
        return {k: out / f"report.{k}" for k in written}  # as the caller named them
    except OutputExistsError:
        existing = [p.name for p in paths.values() if p.exists()]
        raise OutputExistsError(f"Report files {existing} already exist in {out}; pass --overwrite to replace "
                                "them.") from None


def _render(run_dir: Path, paths: dict[str, Path], deny_patterns: Sequence[str] | None, pdf: bool) -> dict[str, Path]:
    """Build the report and commit its files as one unit (commit.file_set; report.json moves in last)."""
    from medunlearn.report.pdf import html_to_pdf

    patterns = compile_patterns(deny_patterns)
    meta, metrics, prov = _load(run_dir)
    sha = verify_inputs(run_dir, meta, metrics)
    attestation = verify_run(run_dir)  # signed verdict, bound to these weights (medunlearn.attest)
    meta = {**meta, "_model_sha256": sha, "_attestation": attestation}
    synthetic = C.is_synthetic(meta, metrics, prov)
    sections = build_sections(meta, metrics, prov, run_dir)
    verdict = sections[0]["verdict"]
    check_pass_is_attested(run_dir, verdict, attestation, meta)
    kind = str(meta.get("kind", "unlearned"))
    title = f"Model modification report: {kind} model {run_dir.name}"
    version = C.fmt(meta.get("code_version") or prov.get("code_version"))
    subtitle = f"Generated {time.strftime('%Y-%m-%d %H:%M')} by medunlearn {version}"
    doc = {"schema_version": 1, "title": title, "kind": kind, "synthetic": synthetic, "model_sha256": sha,
           "verdict": verdict, "attestation": attestation,
           "synthetic_note": SYNTHETIC_NOTE if synthetic else None,
           "sections": [{"title": s["title"],
                         "blocks": [{k: v for k, v in b.items() if k != "png"} for b in s["blocks"]]}
                        for s in sections]}
    texts = {"html": to_html(title, subtitle, sections, synthetic),
             "md": to_markdown(title, subtitle, sections, synthetic),
             "json": json.dumps(doc, indent=2, default=str) + "\n"}
    scrub_check(texts, patterns, sources={"meta": meta, "metrics": metrics, "provenance": prov})
    with file_set(list(paths.values())) as tmp:  # an older PDF never stays beside a new report
        for key in ("html", "md"):
            tmp[paths[key]].write_text(texts[key], encoding="utf-8")
        skipped = html_to_pdf(tmp[paths["html"]], tmp[paths["pdf"]]) if pdf else "not requested"
        if skipped is not None:
            tmp[paths["pdf"]].unlink(missing_ok=True)
        doc["pdf"] = {"file": "report.pdf"} if skipped is None else {"file": None, "skipped": skipped}
        tmp[paths["json"]].write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    if skipped is not None:
        paths.pop("pdf")
    return {k: paths[k] for k in ("html", "md", "json", "pdf") if k in paths}  # absolute; see render_report
