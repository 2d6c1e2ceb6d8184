"""The preview command's markdown report: one pull-request comment, under GitHub's size limit.

Top to bottom: a hidden marker (the comment poster finds the comment again by it), the verdict,
stateful resources that would be replaced or deleted, failures and mandatory policy violations,
a summary table (stack, why, creates, updates, replaces, deletes, policy violations), then per
stack a folded `<details>` block with each changed resource's property-level diff. Long parts
are cut with a note so the whole stays under MAX_CHARS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from automation.provision import StackResult

MARKER = "<!-- iotistic-preview -->"
MAX_CHARS = 64_000  # GitHub refuses comments over 65,536 characters
MAX_DIFF_ROWS = 40  # per resource
OP_SIGNS = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


@dataclass
class ReportInput:
    base: str
    reasons: dict[str, str]  # stack -> why it was previewed
    results: list[StackResult]
    notes: list[str] = field(default_factory=list)
    problem: str = ""  # a failure before any stack was previewed (invalid tenants.yaml, bad base)


def violations(result: StackResult, level: str) -> list[dict]:
    return [p for p in result.details.get("policies", []) if p["level"] == level]


def changed(result: StackResult) -> bool:
    return bool(result.details.get("steps"))


def failed(inp: ReportInput) -> bool:
    """Whether the command exits non-zero: a failed preview or a mandatory violation."""
    return bool(inp.problem) or any(not r.ok or violations(r, "mandatory") for r in inp.results)


def _cell(text: str) -> str:
    """Text that is safe inside a markdown table cell and inline code."""
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def stateful_findings(results: list[StackResult]) -> list[str]:
    lines = []
    for r in sorted(results, key=lambda r: r.stack):
        for s in r.details.get("steps", []):
            if not (s["stateful"] or s.get("volume")):
                continue
            what = "would be deleted" if s["op"] == "delete" else "would be replaced"
            extra = []
            if s.get("volume"):
                extra.append(s["volume"])
            if s.get("replace_keys"):
                extra.append(
                    "replaced because of " + ", ".join(f"`{_cell(k)}`" for k in s["replace_keys"][:5])
                )
            if s.get("refused"):
                extra.append(
                    "**refused: the resource is protected** "
                    "(set `iotistic:allowStatefulReplacement` to allow it)"
                )
            kind = s["type"].rsplit(":", 1)[-1]
            detail = f" — {'; '.join(extra)}" if extra else ""
            lines.append(f"- `{r.stack}`: {kind} `{_cell(s['name'])}` {what}{detail}")
    return lines


def summary_table(inp: ReportInput) -> list[str]:
    rows = [
        "| stack | why | creates | updates | replaces | deletes | policy violations | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in sorted(inp.results, key=lambda r: r.stack):
        mandatory, advisory = len(violations(r, "mandatory")), len(violations(r, "advisory"))
        policy = f"{mandatory} mandatory, {advisory} advisory" if mandatory or advisory else "0"
        result = "ok" if r.ok else "**failed**"
        counts = [str(r.changes.get(op, 0)) for op in ("create", "update", "replace", "delete")]
        why = _cell(inp.reasons.get(r.stack, ""))
        rows.append(f"| `{r.stack}` | {why} | {' | '.join(counts)} | {policy} | {result} |")
    return rows


def stack_section(r: StackResult, budget: int) -> str:
    """The folded block of one stack, cut to `budget` characters with a note."""
    steps = r.details.get("steps", [])
    counts = ", ".join(f"{v} to {k}" for k, v in sorted(r.changes.items()) if v) or "no changes"
    head = f"<details><summary><b>{r.stack}</b>: {counts}{'' if r.ok else ' — failed'}</summary>\n\n"
    body: list[str] = []
    if not r.ok:
        body += ["**Preview failed:**", "", "```text", r.error.strip()[:4000], "```", ""]
    for p in r.details.get("policies", []):
        icon = "❌ mandatory" if p["level"] == "mandatory" else "⚠️ advisory"
        body.append(f"- {icon} `{p['policy']}`: {_cell(p['message'])}")
    if r.details.get("policies"):
        body.append("")
    for s in steps:
        sign = OP_SIGNS.get(s["op"], s["op"])
        flags = " **(stateful)**" if s["stateful"] else ""
        body.append(f"**{sign} {s['op']}** `{s['type']}` `{_cell(s['name'])}`{flags}")
        if s["diffs"]:
            body += ["", "| property | before | after |", "| --- | --- | --- |"]
            for d in s["diffs"][:MAX_DIFF_ROWS]:
                body.append(f"| `{_cell(d['path'])}` | `{_cell(d['before'])}` | `{_cell(d['after'])}` |")
            if len(s["diffs"]) > MAX_DIFF_ROWS:
                body.append(f"| … {len(s['diffs']) - MAX_DIFF_ROWS} more properties cut | | |")
        body.append("")
    tail = "</details>\n"
    text = head + "\n".join(body) + "\n" + tail
    if len(text) <= budget:
        return text
    note = (
        f"\n\n… cut: the full diff of `{r.stack}` is {len(text):,} characters; "
        "run the preview command locally to see all of it.\n"
    )
    keep = max(0, budget - len(head) - len(note) - len(tail))
    cut = "\n".join(body)[:keep]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else ""  # never cut a table row or code fence in half
    if cut.count("```") % 2:
        cut += "\n```"
    return head + cut + note + tail


def render(inp: ReportInput, max_chars: int = MAX_CHARS) -> str:
    out = [MARKER, f"## Iotistic preview against `{inp.base}`", ""]
    if inp.problem:
        out += ["❌ **The preview could not run:**", "", "```text", inp.problem.strip(), "```", ""]
        return "\n".join(out)
    if not inp.results:
        out += [
            "**No changes**: no stack is affected by this change "
            "(only docs, tests or other services changed).",
            "",
        ]
        return "\n".join(out + inp.notes)
    if not any(changed(r) for r in inp.results) and not failed(inp):
        names = ", ".join(f"`{r.stack}`" for r in sorted(inp.results, key=lambda r: r.stack))
        out += [f"**No changes** in the {len(inp.results)} affected stack(s): {names}.", ""]
    else:
        verdict = (
            "❌ **This change must not be merged as it is.**" if failed(inp) else "✅ Previews succeeded."
        )
        out += [verdict, ""]
    stateful = stateful_findings(inp.results)
    if stateful:
        out += ["### ⚠️ Stateful resources would be replaced or deleted", "", *stateful, ""]
    problems = []
    for r in sorted(inp.results, key=lambda r: r.stack):
        if not r.ok:
            problems.append(f"- `{r.stack}`: preview failed: {_cell(_first_line(r.error))}")
        for p in violations(r, "mandatory"):
            problems.append(f"- `{r.stack}`: mandatory policy `{p['policy']}`: {_cell(p['message'])}")
    if problems:
        out += ["### ❌ Failed previews and mandatory policy violations", "", *problems, ""]
    out += summary_table(inp) + [""] + inp.notes + ([""] if inp.notes else [])
    text = "\n".join(out) + "\n"  # a blank line: HTML right after a table would join the table
    sections = [
        r
        for r in sorted(inp.results, key=lambda r: r.stack)
        if changed(r) or r.details.get("policies") or not r.ok
    ]
    omitted = 0
    reserve = 300  # room for the note about omitted stacks
    for i, r in enumerate(sections):
        budget = max_chars - len(text) - reserve
        share = max(budget // (len(sections) - i), 0)
        if share < 400:
            omitted = len(sections) - i
            break
        text += stack_section(r, share) + "\n"
    if omitted:
        text += (
            f"\n… the details of {omitted} more stack(s) were cut to stay under GitHub's comment limit; "
            "the summary table above covers every stack.\n"
        )
    if len(text) > max_chars:  # the summary alone is too long (hundreds of stacks)
        text = text[: max_chars - 120] + "\n\n… report cut at GitHub's comment limit.\n"
    return text
