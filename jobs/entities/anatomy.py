"""Where a condition is: DIRECTION on body sites, SYSTEM_ORGAN_SITE linking a condition to its site.

Why: Comprehend Medical gives an ANATOMY entity its side ("left knee": DIRECTION "left") and
links a condition to the body site it is in ("Pain in the left knee": the condition "Pain" has
an attribute SYSTEM_ORGAN_SITE "knee", relationship SYSTEM_ORGAN_SITE). The local extractor finds
the sites; these two rules relate them, on the surface forms clinical notes use: a side word
right before the site, and "CONDITION in/of/on/over/to the (side) SITE" or "SITE CONDITION"
("knee pain", "leg swelling") inside one clause. Pure ``re``.
"""
from __future__ import annotations

import re

from jobs.entities.phi import Found

_DIRECTION = re.compile(
    r"\b(left|right|bilateral|both|upper|lower|anterior|posterior|medial|lateral|proximal|distal|inferior"
    r"|superior|dorsal|ventral|L|R)[ \t]+(?:(?:upper|lower|inner|outer)[ \t]+)?$", re.I)
_LINK = re.compile(r"^[ \t]+(?:in|of|on|over|to|at|involving|along)[ \t]+(?:(?:the|his|her|their|both|a)[ \t]+)?"
                   r"(?:(?:left|right|bilateral|upper|lower|anterior|posterior)[ \t]+){0,2}$", re.I)


def direction(text: str, begin: int) -> Found | None:
    """A side or position word right before a body site ("left knee" -> "left")."""
    m = _DIRECTION.search(text, max(0, begin - 24), begin)
    if m is None or (m.group(1) in ("L", "R") and not m.group(1).isupper()):
        return None
    return Found(m.start(1), m.end(1), "DIRECTION", 0.8)


def site_of(text: str, condition: tuple[int, int], site: tuple[int, int]) -> bool:
    """Is the body site at ``site`` where the condition at ``condition`` is, by the surface link?"""
    (cb, ce), (sb, se) = condition, site
    if ce <= sb:  # "Pain in the left knee"
        return _LINK.match(text[ce:sb]) is not None
    if se <= cb:  # "knee pain", "leg swelling"
        return text[se:cb] in (" ", "\t")
    return False
