"""The discussion cell of every notebook, generated from its computed claims (never typed by hand)."""

from __future__ import annotations

from typing import Mapping, Sequence

from .reproduce import Claim, outcome_counts

#: why a small-scale claim may be inconclusive or contradicted: stated once, shown where it applies
SCALE_NOTES: dict[str, str] = {
    "synthetic": "the built-in synthetic faces are an easier, cleaner task than CASIA-WebFace -> LFW/YTF "
                 "(softmax alone is already near its ceiling), so there is less room for a margin to help",
    "cpu": "CPU-sized networks (1/8 width, 64-d features, about a thousand iterations) are far from the paper's "
           "28k iterations of SphereFace-64 at full width on 494k images",
    "seeds": "a few seeds and 10 folds resolve differences of a few tenths of a point at best; the paper's "
             "gaps at m = 1..3 and between the compared losses are of that size",
}
#: replaces the synthetic-faces note when the notebook ran on a real-data folder (``data`` set)
REAL_DATA_NOTE = ("a real set smaller than the paper's (CASIA-WebFace: 494k images of 10,575 people; LFW: 6,000 pairs "
                  "of 5,749 people) gives the networks less to learn from and the claims fewer test pairs; on the "
                  "README's AT&T folder (100 training images of 10 people, 1,800 pairs of 20) they overfit and the "
                  "intervals are wide")


def scale_notes(real_data: bool = False) -> dict[str, str]:
    """The notes that apply: :data:`SCALE_NOTES`, with :data:`REAL_DATA_NOTE` in place of the synthetic one
    when the notebook ran on real faces."""
    if not real_data:
        return dict(SCALE_NOTES)
    return {"real": REAL_DATA_NOTE, **{k: v for k, v in SCALE_NOTES.items() if k != "synthetic"}}


def discussion_markdown(claims: Sequence[Claim], notes: Mapping[str, str] = SCALE_NOTES) -> str:
    """Markdown: the outcome counts, what reproduced, what did not (with effect and the paper's value), and the
    known reasons for the claims that did not reproduce."""
    lines = [f"**Discussion (generated from the outcomes above).** {outcome_counts(claims)}", ""]
    for outcome, verb in (("reproduced", "Reproduced"), ("inconclusive", "Inconclusive (the interval holds 0)"),
                          ("contradicted", "Contradicted (significantly the other way)")):
        chosen = [c for c in claims if c.outcome == outcome]
        if chosen:
            lines.append(f"*{verb}:*")
            lines += [f"- {c.claim}: ours {c.effect} ({c.ours}); paper {c.paper_cited}." for c in chosen]
            lines.append("")
    if any(c.outcome != "reproduced" for c in claims) and notes:
        lines.append("*Known reasons a claim can fail to reproduce at this scale:* "
                     + "; ".join(notes.values()) + ". An inconclusive outcome is no evidence against the paper; "
                     "a contradicted one says the miniature behaves differently.")
    return "\n".join(lines)


def show_discussion(claims: Sequence[Claim], real_data: bool = False) -> None:
    """Display :func:`discussion_markdown` in the notebook, with the notes of :func:`scale_notes`."""
    from IPython.display import Markdown, display

    display(Markdown(discussion_markdown(claims, scale_notes(real_data))))
