"""The generated discussion: counts and lines from the claims, the notes that apply to the data the notebook ran on
and to what it trained (its own parameters, never a typed scale)."""

from __future__ import annotations

import math

import pytest

from sphereface_lib.companion.discussion import (
    REAL_DATA_NOTE,
    REAL_FEATURES_NOTE,
    SYNTHETIC_FEATURES_NOTE,
    SYNTHETIC_NOTE,
    Training,
    discussion_markdown,
    regime,
    scale_notes,
)
from sphereface_lib.companion.claims import Claim

VERIFICATION = Training("sphereface10", 0.125, 64, 1000, 3)
FEATURES_2D = Training("sphereface4", 0.125, 2, 400, 1, task="features")


def _claim(name: str, outcome: str) -> Claim:
    return Claim(name, "paper value", "SphereFace Table 3", "ours value", outcome, "+1.00 pts [+0.50, +1.50]", "95% interval")


def test_every_claim_is_listed_under_its_outcome() -> None:
    text = discussion_markdown([_claim("a", "reproduced"), _claim("b", "inconclusive"), _claim("c", "contradicted")],
                               scale_notes(training=VERIFICATION))
    assert "1 reproduced, 1 inconclusive, 1 contradicted" in text
    for name, heading in (("a", "*Reproduced:*"), ("b", "*Inconclusive"), ("c", "*Contradicted")):
        assert text.index(heading) < text.index(f"- {name}:")
    assert SYNTHETIC_NOTE in text


def test_an_outcome_beyond_the_three_gets_its_own_heading() -> None:
    claim = _claim("d", "inconclusive")
    object.__setattr__(claim, "outcome", "not tested: one run")  # an outcome the statistics may add later
    text = discussion_markdown([claim])
    assert text.index("*Not tested: one run:*") < text.index("- d:")


def test_no_reasons_are_given_when_everything_reproduced() -> None:
    assert "Known reasons" not in discussion_markdown([_claim("a", "reproduced")], scale_notes(training=VERIFICATION))


def test_real_data_replaces_the_synthetic_note() -> None:
    notes = scale_notes(real_data=True, training=VERIFICATION)
    assert REAL_DATA_NOTE in notes.values() and SYNTHETIC_NOTE not in notes.values()
    text = discussion_markdown([_claim("b", "inconclusive")], notes)
    assert "synthetic" not in text and REAL_DATA_NOTE in text
    features = scale_notes(real_data=True, training=FEATURES_2D)
    assert REAL_FEATURES_NOTE in features.values() and SYNTHETIC_FEATURES_NOTE not in features.values()


def test_the_scale_is_the_runs_own() -> None:
    """02 / 03 train 2-D / 3-D features for 400 iterations: the notes say so, not 04's 64-d and 1,000."""
    two_d = "; ".join(scale_notes(training=FEATURES_2D).values())
    assert "2-d features" in two_d and "400 iterations" in two_d and "one training run" in two_d
    assert "64-d" not in two_d and "1,000" not in two_d and "thousand" not in two_d
    three_d = "; ".join(scale_notes(training=Training("sphereface4", 0.125, 3, 30, 1, task="features")).values())
    assert "3-d features" in three_d and "30 iterations" in three_d
    verification = "; ".join(scale_notes(training=VERIFICATION).values())
    assert "sphereface10 at 0.125 width, 64-d features, 1,000 iterations" in verification
    assert "3 training runs per row, over the protocol's folds or probe identities, resolve differences" in verification
    one = "; ".join(scale_notes(training=Training("sphereface4", 0.125, 32, 10, 1)).values())
    assert "one training run per row, over the protocol's folds or probe identities, resolves differences" in one


def test_a_notebook_that_trains_nothing_gets_no_scale_notes() -> None:
    assert scale_notes() == {} and scale_notes(real_data=True) == {}
    assert "Known reasons" not in discussion_markdown([_claim("b", "contradicted")], scale_notes())


@pytest.mark.parametrize("bad", [dict(task="detection"), dict(iterations=0), dict(runs=0)])
def test_training_rejects_nonsense(bad: dict) -> None:
    fields = dict(backbone="sphereface4", width=0.125, feat_dim=2, iterations=400, runs=1, task="features") | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        Training(**fields)


def test_the_regime_says_from_the_logs_whether_every_margin_row_fitted() -> None:
    bound = 0.1 * math.log(340)  # 0.58
    fitted = regime([("softmax", 0.01), ("asoftmax_m4", 0.30), ("asoftmax_m4", 0.50), ("lsoftmax", 0.2)], 340)
    assert fitted.startswith("every margin row fitted its training set") and f"{bound:.2f}" in fitted
    assert "asoftmax_m4 0.30-0.50; lsoftmax 0.20" in fitted and "softmax 0.01" not in fitted
    one_run_over = regime([("asoftmax_m4@4", 0.30), ("asoftmax_m4@4", 0.59), ("asoftmax_m4@10", 0.1)], 340)
    assert one_run_over.startswith("asoftmax_m4@4 did not fit its training set: the margin claims are decided in an "
                                   "underfit regime")
    assert regime([("softmax", 0.01), ("asoftmax_m1", 3.0)], 340) == ""  # no margin row: nothing to say


def test_the_regime_leads_the_discussion_when_given() -> None:
    text = discussion_markdown([_claim("a", "reproduced")], regime="every margin row fitted its training set (...)")
    assert text.splitlines()[2] == "*Regime:* every margin row fitted its training set (...)."
    assert "Regime" not in discussion_markdown([_claim("a", "reproduced")])
