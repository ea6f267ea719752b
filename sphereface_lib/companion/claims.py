"""Claims: one line of a notebook's results table, made from a :class:`~.statistics.Estimate` and stored in the
executed notebook, where the runner (:mod:`.reproduce`) and the report (:mod:`.report`) read it back.

A claim's outcome is the estimate's :attr:`~.statistics.Estimate.verdict`: ``reproduced``, ``inconclusive`` or
``contradicted`` at :data:`~.statistics.CONFIDENCE`, or ``not tested: one run`` / ``two runs`` when too few
training runs stand behind it; its ``design`` says what was sampled (runs, folds, clusters) and ``evidence`` how
the interval was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from ..errors import UserError
from . import statistics as S

CLAIMS_METADATA_KEY = "sphereface_claims"


class ClaimError(UserError):
    """A stored claim this version cannot read; the message names the fix."""


@dataclass(frozen=True)
class Claim:
    """One row of the results table: the paper's statement and value, ours, the effect and the outcome.

    ``paper_source`` says where the typed value comes from (e.g. "SphereFace Table 3; CosFace Table 2");
    ``effect`` is the tested quantity with its interval (e.g. "+1.23 pts [+0.40, +2.06]"; several effects are
    joined by "; ", each with its own interval); ``outcome`` is one of :data:`~.statistics.VERDICTS`, computed
    from the data; ``evidence`` names the method; ``design`` the runs, folds and clusters behind the interval.
    """

    claim: str
    paper: str
    paper_source: str
    ours: str
    outcome: str
    effect: str
    evidence: str
    design: str = ""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, str):
                raise TypeError(f"Claim.{name} must be a str, got {type(value).__name__} {value!r}")
        if self.outcome not in S.VERDICTS:
            raise ValueError(f"Claim.outcome must be one of {', '.join(S.VERDICTS)}, got {self.outcome!r}")

    @property
    def paper_cited(self) -> str:
        """The paper's value followed by its source in parentheses."""
        return f"{self.paper} ({self.paper_source})" if self.paper_source else self.paper


def make_claim(claim: str, paper: str, paper_source: str, ours: str, estimate: S.Estimate, unit: str = "pts",
               digits: int = 2) -> Claim:
    """A results-table line whose outcome, effect and design come from ``estimate``."""
    e = estimate
    return Claim(claim=claim, paper=paper, paper_source=paper_source, ours=ours, outcome=e.verdict,
                 effect=e.effect_text(unit, digits),
                 evidence=e.method if e.exact else f"{e.confidence:.0%} interval, {e.method}", design=e.design)


def make_all_of_claim(claim: str, paper: str, paper_source: str, ours: str, estimates: Mapping[str, S.Estimate],
                      unit: str = "pts", digits: int = 2) -> Claim:
    """A claim over several comparisons at once ("beats every compared loss": :func:`~.statistics.all_of`);
    its effect lists every comparison with its own (unadjusted) interval, so runs compare effect by effect."""
    outcome, evidence = S.all_of(estimates, unit=unit, digits=digits)
    effects = "; ".join(f"{k} {e.effect_text('', digits)}" for k, e in estimates.items())
    design = "; ".join(dict.fromkeys(e.design for e in estimates.values() if e.design))
    return Claim(claim=claim, paper=paper, paper_source=paper_source, ours=ours, outcome=outcome,
                 effect=effects, evidence=evidence, design=design)


def markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims as a Markdown table: claim | paper (source) | ours | effect [interval] | outcome | design |
    evidence."""
    rows = ["| claim | paper | ours | effect [interval] | outcome | design | evidence |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    rows += [
        "| " + " | ".join(markdown_cell(v) for v in (c.claim, c.paper_cited, c.ours, c.effect, c.outcome, c.design,
                                                       c.evidence)) + " |"
        for c in claims
    ]
    return "\n".join(rows)


def outcome_counts(claims: Sequence[Claim]) -> str:
    """One sentence: how many claims reproduced, were inconclusive, were contradicted (and were not tested)."""
    counts = {o: sum(c.outcome == o for c in claims) for o in S.OUTCOMES}
    untested = sum(c.outcome not in S.OUTCOMES for c in claims)
    tail = f", {untested} not tested (fewer than {S.MIN_RUNS} runs)" if untested else ""
    return (f"{len(claims)} claims: {counts['reproduced']} reproduced, {counts['inconclusive']} inconclusive, "
            f"{counts['contradicted']} contradicted{tail} at {S.CONFIDENCE * 100:.4g}% confidence.")


def record_claims(claims: Sequence[Claim]) -> None:
    """Display the notebook's claims and store them, machine-readable, in the output's metadata.

    Call once, in the last cell of a notebook; the runner collects the claims from the executed notebook.
    """
    from IPython.display import display

    claims = list(claims)
    if not claims or not all(isinstance(c, Claim) for c in claims):
        raise TypeError("record_claims: pass a non-empty list of sphereface_lib.companion.claims.Claim")
    table = outcome_counts(claims) + "\n\n" + claims_markdown(claims)
    display(
        {"text/markdown": table, "text/plain": table},
        raw=True,
        metadata={CLAIMS_METADATA_KEY: [asdict(c) for c in claims]},
    )


def read_claims(notebook: dict[str, Any]) -> list[Claim]:
    """The claims an executed notebook recorded with :func:`record_claims` (empty if none)."""
    claims: list[Claim] = []
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            for raw in output.get("metadata", {}).get(CLAIMS_METADATA_KEY, []):
                try:
                    claims.append(Claim(**raw))
                except (TypeError, ValueError) as err:
                    raise ClaimError(
                        f"a report holds a claim this runner cannot read ({err}); re-run its notebook: "
                        "make reproduce FORCE=1"
                    ) from None
    return claims
