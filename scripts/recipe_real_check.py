"""Criterion 1 of docs/recipe.md on real faces: C3 trains softmax and A-Softmax m=4 on a few hundred
real images (a ``data_prep.openset`` folder, e.g. AT&T: 20 identities x 10 images). Only training losses are
read; no test pair is scored.

    python scripts/recipe_real_check.py cache/att_real [lr ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sphereface_lib.companion import experiments as E  # noqa: E402


#: the recipe this check was made with (C3, the default before round 5) and the real profile keeps
C3 = E.Recipe(width=0.125, iterations=1000, lambda_min_at=0.30, gradient="exact", lsoftmax_lambda_min_at=None)


def main() -> None:
    data = Path(sys.argv[1])
    rates = [float(a) for a in sys.argv[2:]] or [C3.lr]
    bench = E.open_benchmark(str(data.resolve()), ROOT / "cache", ("train",))
    ln_c = math.log(bench.train.num_identities)
    out = []
    for lr in rates:
        for row in ("softmax", "asoftmax_m4"):
            for seed in (0, 1):
                line = {"lr": lr, "row": row, "seed": seed}
                try:
                    model = E.train_row(bench, row, E.Recipe(**{**C3.__dict__, "lr": lr}), seed, ROOT / "cache" / "recipe_study")
                except Exception as exc:  # a diverged run is a result of the check
                    line.update(trained=False, failed=str(exc).split(";")[0])
                else:
                    losses = [r["loss"] for r in model.metrics]
                    line.update(first_loss=losses[0], final_loss=losses[-1], trained=losses[-1] < 0.9 * ln_c)
                out.append(line)
                print(json.dumps(line), flush=True)
    print(f"ln C = {ln_c:.3f}; {len(bench.train)} training images of {bench.train.num_identities} identities")


if __name__ == "__main__":
    main()
