"""The generated discussion: counts and lines from the claims, the notes that apply to the data the notebook ran on."""

from __future__ import annotations

from sphereface_lib.companion.discussion import REAL_DATA_NOTE, SCALE_NOTES, discussion_markdown, scale_notes
from sphereface_lib.companion.reproduce import Claim


def _claim(name: str, outcome: str) -> Claim:
    return Claim(name, "paper value", "SphereFace Table 3", "ours value", outcome, "+1.00 pts [+0.50, +1.50]", "95% interval")


def test_every_claim_is_listed_under_its_outcome() -> None:
    text = discussion_markdown([_claim("a", "reproduced"), _claim("b", "inconclusive"), _claim("c", "contradicted")])
    assert "1 reproduced, 1 inconclusive, 1 contradicted" in text
    for name, heading in (("a", "*Reproduced:*"), ("b", "*Inconclusive"), ("c", "*Contradicted")):
        assert text.index(heading) < text.index(f"- {name}:")
    assert SCALE_NOTES["synthetic"] in text


def test_no_reasons_are_given_when_everything_reproduced() -> None:
    assert "Known reasons" not in discussion_markdown([_claim("a", "reproduced")])


def test_real_data_replaces_the_synthetic_note() -> None:
    notes = scale_notes(real_data=True)
    assert REAL_DATA_NOTE in notes.values() and SCALE_NOTES["synthetic"] not in notes.values()
    text = discussion_markdown([_claim("b", "inconclusive")], notes)
    assert "synthetic" not in text and REAL_DATA_NOTE in text
    assert scale_notes() == SCALE_NOTES
