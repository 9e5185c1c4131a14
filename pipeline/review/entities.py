"""Entities (DetectEntitiesV2 shape) as the review page shows them: spans, tooltips and groups.

A reader wants medications with their dose, route and frequency on one row, conditions with
their ICD-10-CM codes, tests with their values, and PHI apart; and a negated finding must read as
negated ("no history of hypertension" is not hypertension). Concept lists (``ICD10CMConcepts``,
``RxNormConcepts``, ``SNOMEDCTConcepts``: InferICD10CM / InferRxNorm shapes) are shown when an
entity carries them.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from pipeline.review.spans import Span

CATEGORY_LABELS = {
    "MEDICATION": "Medication",
    "MEDICAL_CONDITION": "Condition",
    "TEST_TREATMENT_PROCEDURE": "Test, treatment or procedure",
    "PROTECTED_HEALTH_INFORMATION": "PHI",
    "ANATOMY": "Anatomy",
    "TIME_EXPRESSION": "Time expression",
    "BEHAVIORAL_ENVIRONMENTAL_SOCIAL": "Behavioural, environmental, social",
}


@dataclass(frozen=True)
class Group:
    title: str
    categories: tuple[str, ...]
    columns: tuple[tuple[str, tuple[str, ...]], ...]  # (heading, attribute types shown in it)


GROUPS = (
    Group("Medications", ("MEDICATION",), (("Dose", ("DOSAGE", "STRENGTH")), ("Route", ("ROUTE_OR_MODE",)),
                                           ("Frequency", ("FREQUENCY",)))),
    Group("Conditions", ("MEDICAL_CONDITION",), ()),
    Group("Tests, treatments and procedures", ("TEST_TREATMENT_PROCEDURE",), (("Value", ("TEST_VALUE", "TEST_UNIT")),)),
    Group("PHI", ("PROTECTED_HEALTH_INFORMATION",), ()),
    Group("Other", (), ()),  # every category not named above
)


def css_category(category: str) -> str:
    return "cat-" + "".join(c if c.isalnum() else "-" for c in category.lower())


def entity_list(entities: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not isinstance(entities, dict):
        return []
    return [e for e in entities.get("Entities", []) if isinstance(e, dict)]


def is_negated(item: dict[str, Any]) -> bool:
    return any(t.get("Name") == "NEGATION" for t in item.get("Traits") or [])


def concepts(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(system, concept) pairs from every *Concepts list, ICD-10-CM first."""
    out = []
    for key in sorted((k for k in item if k.endswith("Concepts")), key=lambda k: (not k.startswith("ICD10"), k)):
        system = {"ICD10CMConcepts": "ICD-10-CM", "RxNormConcepts": "RxNorm",
                  "SNOMEDCTConcepts": "SNOMED CT"}.get(key, key.removesuffix("Concepts"))
        out += [(system, c) for c in item.get(key) or [] if isinstance(c, dict)]
    return out


def _score(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "n/a"


def tip(item: dict[str, Any], parent: dict[str, Any] | None = None) -> str:
    """The tooltip of one highlight: category and type, negation first and plain, score, traits, codes."""
    lines = []
    if parent is not None:
        lines.append(f"{item.get('Type', '?')} of \u201c{parent.get('Text', '')}\u201d")
    else:
        lines.append(f"{CATEGORY_LABELS.get(item.get('Category', ''), item.get('Category', '?'))} \u00b7 {item.get('Type', '?')}")
    if is_negated(item):
        lines.append("NEGATED: stated as absent")
    lines.append(f"score {_score(item.get('Score'))}")
    traits = [f"{t.get('Name')} {_score(t.get('Score'))}" for t in item.get("Traits") or [] if t.get("Name") != "NEGATION"]
    if traits:
        lines.append("traits: " + ", ".join(traits))
    for system, c in concepts(item)[:3]:
        lines.append(f"{system} {c.get('Code', '?')} {c.get('Description', '')} ({_score(c.get('Score'))})")
    if parent is None:
        for attr in item.get("Attributes") or []:
            lines.append(f"{attr.get('Type', '?').lower().replace('_', ' ')}: {attr.get('Text', '')}")
    return "\n".join(lines)


def spans(entities: dict[str, Any] | None) -> list[Span]:
    """One span per entity, and one per attribute whose offsets no entity already has."""
    items = entity_list(entities)
    out: list[Span] = []
    taken = {(e.get("BeginOffset"), e.get("EndOffset")) for e in items}
    for e in items:
        eid = e.get("Id")
        neg = " neg" if is_negated(e) else ""
        out.append(Span(int(e.get("BeginOffset", -1)), int(e.get("EndOffset", -1)), f"m-{eid}",
                        f"ent {css_category(e.get('Category', ''))}{neg}", tip(e), f"e-{eid}"))
        for a in e.get("Attributes") or []:
            key = (a.get("BeginOffset"), a.get("EndOffset"))
            if key in taken:
                continue
            taken.add(key)
            out.append(Span(int(a.get("BeginOffset", -1)), int(a.get("EndOffset", -1)), f"m-{eid}-a{a.get('Id')}",
                            "ent attr" + (" neg" if is_negated(a) else ""), tip(a, e), f"e-{eid}", kind="attribute"))
    return out


def _attrs(item: dict[str, Any], types: tuple[str, ...]) -> list[dict[str, Any]]:
    return [a for a in item.get("Attributes") or [] if a.get("Type") in types]


def _cell_attrs(attrs: list[dict[str, Any]], with_type: bool = False) -> str:
    parts = []
    for a in attrs:
        label = f"{html.escape(str(a.get('Type', '?')).lower().replace('_', ' '))}: " if with_type else ""
        neg = ' <strong class="neg-label">negated</strong>' if is_negated(a) else ""
        parts.append(f"{label}{html.escape(str(a.get('Text', '')))}{neg}")
    return "<br>".join(parts)


def _cell_traits(item: dict[str, Any]) -> str:
    parts = []
    if is_negated(item):
        parts.append('<strong class="neg-label">Negated: stated as absent</strong>')
    parts += [f"{html.escape(str(t.get('Name')))} {_score(t.get('Score'))}"
              for t in item.get("Traits") or [] if t.get("Name") != "NEGATION"]
    return "<br>".join(parts)


def _cell_codes(item: dict[str, Any]) -> str:
    return "<br>".join(
        f"<span class=\"code\">{html.escape(system)} <b>{html.escape(str(c.get('Code', '?')))}</b></span> "
        f"{html.escape(str(c.get('Description', '')))} ({_score(c.get('Score'))})"
        for system, c in concepts(item)[:5]
    )


def groups_html(entities: dict[str, Any] | None, left_out: set[str]) -> str:
    """The grouped tables; each row's id is what the highlights' aria-describedby points to."""
    items = entity_list(entities)
    if entities is None:
        return "<p>No entities.json for this document.</p>"
    named = {c for g in GROUPS for c in g.categories}
    out = [(f'<p>{len(items)} entities. Highlights in the page text are focusable (Tab) and show the '
            'same details; struck-through highlights are negated.</p>')]
    for group in GROUPS:
        rows = [e for e in items if (e.get("Category") in group.categories if group.categories
                                     else e.get("Category") not in named)]
        if not rows:
            continue
        heads = ["Text", "Type", *[c[0] for c in group.columns], "Other attributes", "Traits", "Score", "Codes"]
        out.append(f'<h3>{html.escape(group.title)} <span class="count">({len(rows)})</span></h3>')
        out.append('<div class="scroll"><table class="entities"><thead><tr>'
                   + "".join(f'<th scope="col">{h}</th>' for h in heads) + "</tr></thead><tbody>")
        shown_types = {t for _, types in group.columns for t in types}
        for e in rows:
            eid = e.get("Id")
            anchor = f"m-{eid}"
            label = html.escape(str(e.get("Text", "")))
            text = (f'<a href="#{anchor}">{label}</a>' if anchor not in left_out
                    else f'{label} <small>(not highlighted: crosses another span or a page break)</small>')
            category = "" if group.categories else f"{html.escape(str(e.get('Category', '')))} \u00b7 "
            cells = [text, category + html.escape(str(e.get("Type", "")))]
            cells += [_cell_attrs(_attrs(e, types)) for _, types in group.columns]
            other = [a for a in e.get("Attributes") or [] if a.get("Type") not in shown_types]
            cells += [_cell_attrs(other, with_type=True), _cell_traits(e), _score(e.get("Score")), _cell_codes(e)]
            neg = " neg-row" if is_negated(e) else ""
            out.append(f'<tr id="e-{eid}" class="{css_category(str(e.get("Category", "")))}{neg}">'
                       + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody></table></div>")
    unmapped = entities.get("UnmappedAttributes") or []
    if unmapped:
        out.append(f"<h3>Attributes without an entity <span class=\"count\">({len(unmapped)})</span></h3><ul>")
        for u in unmapped:
            a = u.get("Attribute", u) if isinstance(u, dict) else {}
            out.append(f"<li>{html.escape(str(a.get('Type', '?')))}: {html.escape(str(a.get('Text', '')))} "
                       f"(score {_score(a.get('Score'))})</li>")
        out.append("</ul>")
    return "".join(out)
