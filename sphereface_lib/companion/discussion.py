"""The discussion cell of every notebook, generated from its computed claims and from what it trained (never
typed by hand)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

from .claims import Claim, outcome_counts

#: what the paper trained for the verification claims (Tables 2-5, Section 4.1)
PAPER_VERIFICATION_TRAINING = ("the paper's 28k iterations of SphereFace-64 at full width (512-d features) on "
                               "CASIA-WebFace's 494k images")
#: why a verification claim may be inconclusive or contradicted on the built-in synthetic faces
SYNTHETIC_NOTE = ("the built-in synthetic faces are an easier, cleaner task than the paper's (CASIA-WebFace for "
                  "training; LFW, YTF and MegaFace for testing), so there is less room for a margin to help")
#: replaces :data:`SYNTHETIC_NOTE` when a verification notebook ran on a real-data folder (``data`` set)
REAL_DATA_NOTE = ("a real set smaller than the paper's (CASIA-WebFace: 494k images of 10,575 people; LFW: 6,000 pairs "
                  "of 5,749 people) gives the networks less to learn from and the claims fewer test pairs; on the "
                  "README's AT&T folder (100 training images of 10 people, 1,800 pairs of 20) they overfit and the "
                  "intervals are wide")
#: the data notes of the feature studies (02, 03: a few identities, features of 2 or 3 dimensions)
SYNTHETIC_FEATURES_NOTE = ("the built-in synthetic faces are cleaner and more alike within an identity than the "
                           "paper's CASIA-WebFace images, so even a head without a margin can separate a few "
                           "identities")
#: rows whose margin must be learned (docs/recipe.md, criterion 1b) and the final training loss that counts as learned
MARGIN_ROWS, FIT_FRACTION = ("asoftmax_m2", "asoftmax_m3", "asoftmax_m4", "lsoftmax"), 0.1
REAL_FEATURES_NOTE = ("the identities of a real set smaller than CASIA-WebFace hold fewer images each: the network "
                      "has less to learn from and the bootstrap fewer test images")


@dataclass(frozen=True)
class Training:
    """What a notebook trained for its claims, as its discussion states it: the backbone(s) (e.g. "sphereface10"
    or "sphereface4 to sphereface20"), width multiplier, feature dimension, SGD iterations, training runs (seeds)
    behind each compared row, and the task: ``verification`` (04-07: LFW/YTF/MegaFace-like protocols) or
    ``features`` (02-03: low-dimensional features of a few identities)."""

    backbone: str
    width: float
    feat_dim: int
    iterations: int
    runs: int
    task: Literal["verification", "features"] = "verification"
    #: whether the margin rows fitted their training set (:func:`regime`); "" when the notebook trains none
    regime: str = ""

    def __post_init__(self) -> None:
        if self.task not in ("verification", "features"):
            raise ValueError(f"Training.task must be 'verification' or 'features', got {self.task!r}")
        for name in ("feat_dim", "iterations", "runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"Training.{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def network(self) -> str:
        """E.g. "sphereface10 at 0.125 width, 64-d features, 1,000 iterations"."""
        return f"{self.backbone} at {self.width:g} width, {self.feat_dim}-d features, {self.iterations:,} iterations"


def regime(final_losses: Iterable[tuple[str, float]], classes: int) -> str:
    """Whether every margin row (A-Softmax m >= 2, L-Softmax; a label may end in "@<depth>") fitted its training set,
    final training loss at most 0.1 ln C on every run, read from (label, final loss) of the training logs."""
    bound = FIT_FRACTION * math.log(classes)
    margin: dict[str, list[float]] = {}
    for label, loss in final_losses:
        if label.split("@")[0] in MARGIN_ROWS:
            margin.setdefault(label, []).append(float(loss))
    if not margin:
        return ""
    missed = [label for label, losses in margin.items() if max(losses) > bound]
    spans = "; ".join(f"{label} {min(v):.2f}" + (f"-{max(v):.2f}" if len(v) > 1 else "") for label, v in margin.items())
    verdict = ("every margin row fitted its training set" if not missed else
               f"{', '.join(missed)} did not fit {'its' if len(missed) == 1 else 'their'} training set: the margin "
               "claims are decided in an underfit regime")
    return f"{verdict} (final training loss against 0.1 ln C = {bound:.2f}, from the training logs: {spans})"


def _runs(n: int) -> str:
    return "one training run" if n == 1 else f"{n} training runs"


def scale_notes(real_data: bool = False, training: Training | None = None) -> dict[str, str]:
    """The reasons a claim can fail to reproduce at the scale ``training`` describes, on synthetic or real data;
    none without ``training`` (a notebook that trains nothing: its checks are deterministic)."""
    if training is None:
        return {}
    if training.task == "features":
        return {
            "data": REAL_FEATURES_NOTE if real_data else SYNTHETIC_FEATURES_NOTE,
            "cpu": f"a CPU-sized network ({training.network}) is far smaller and shorter-trained than the paper's CNN",
            "runs": (f"{_runs(training.runs)} per model: the intervals (a bootstrap over images) leave out the "
                     "run-to-run spread of the training"),
        }
    return {
        "data": REAL_DATA_NOTE if real_data else SYNTHETIC_NOTE,
        "cpu": f"CPU-sized networks ({training.network}) are far from {PAPER_VERIFICATION_TRAINING}",
        "runs": (f"{_runs(training.runs)} per row, over the protocol's folds or probe identities, "
                 f"{'resolves' if training.runs == 1 else 'resolve'} differences of a few tenths of a point at best; "
                 "many of the paper's gaps are of that size"),
    }


def discussion_markdown(claims: Sequence[Claim], notes: Mapping[str, str] | None = None, regime: str = "") -> str:
    """Markdown: the outcome counts, the training regime (:func:`regime`), what reproduced, what did not (with effect
    and the paper's value), and the known reasons (``notes``) for the claims that did not reproduce."""
    lines = [f"**Discussion (generated from the outcomes above).** {outcome_counts(claims)}", ""]
    if regime:
        lines += [f"*Regime:* {regime}.", ""]
    headings = {"reproduced": "Reproduced", "inconclusive": "Inconclusive (the interval holds 0)",
                "contradicted": "Contradicted (significantly the other way)"}
    outcomes = [*headings, *sorted({c.outcome for c in claims} - set(headings))]
    for outcome in outcomes:
        chosen = [c for c in claims if c.outcome == outcome]
        if chosen:
            lines.append(f"*{headings.get(outcome, outcome[:1].upper() + outcome[1:])}:*")
            lines += [f"- {c.claim}: ours {c.effect} ({c.ours}); paper {c.paper_cited}." for c in chosen]
            lines.append("")
    if any(c.outcome != "reproduced" for c in claims) and notes:
        lines.append("*Known reasons a claim can fail to reproduce at this scale:* "
                     + "; ".join(notes.values()) + ". An inconclusive outcome is no evidence against the paper; "
                     "a contradicted one says the miniature behaves differently.")
    return "\n".join(lines)


def show_discussion(claims: Sequence[Claim], real_data: bool = False, training: Training | None = None) -> None:
    """Display :func:`discussion_markdown` in the notebook, with the notes of :func:`scale_notes`."""
    from IPython.display import Markdown, display

    display(Markdown(discussion_markdown(claims, scale_notes(real_data, training),
                                         training.regime if training else "")))
