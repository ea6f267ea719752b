"""The recipe study of the ``lfw`` profile (docs/recipe.md, "Real faces (the lfw profile)"): round 4's rules on
validation identities carved from the real training pack (CelebA); LFW and its MegaFace-like parts are never
opened.

    python scripts/recipe_lfw_study.py /work/data-real-56x48 [--only L1] [--lr 0.02] [--screen | --all-rows]

Writes ``docs/recipe_study/lfw_<candidate>.json``: every model's loss log, final loss, validation accuracy and CPU
seconds, the criteria, the seconds per model and per test image, and the estimated profile time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import recipe_study as R  # noqa: E402  (round 4's rows, criteria and pricing: one definition)
from sphereface_lib.companion import experiments as E  # noqa: E402

OFFICIAL = E.OFFICIAL_LAMBDA_MIN_AT / E.OFFICIAL_ITERATIONS  # lambda reaches 5 at 5.9% of the run
CANDIDATES = {key: E.Recipe(backbone="sphereface10", width=width, iterations=iters, lambda_min_at=OFFICIAL,
                            gradient="official", lsoftmax_lambda_min_at=0.30)  # round 5's L-Softmax point
              for key, width, iters in (("L1", 0.25, 1000), ("L2", 0.125, 2000), ("L3", 0.25, 2000),
                                        ("L4", 0.125, 4000), ("L5", 0.125, 6000), ("L6", 0.25, 3000))}
CANDIDATES["L7"] = E.Recipe(**{**CANDIDATES["L3"].__dict__, "lr": 0.1})
#: round 4 of the lfw study: SphereFace-4 at width 0.25, longer
CANDIDATES.update({key: E.Recipe(**{**CANDIDATES["L3"].__dict__, "backbone": "sphereface4", "iterations": iters})
                   for key, iters in (("L8", 3000), ("L9", 4000))})
#: --screen: the first model of round 4's order alone (A-Softmax m = 4, seed 0), where criterion 1b decides soonest
SCREEN_ROWS = {"asoftmax_m4": (0,)}
#: criterion 4: LFW View 2 crops featured per model evaluation of 04-06 (04 15, 05 18, 06 20: 53), and the
#: MegaFace-like probe + distractor crops per model of 07 (18)
LFW_IMAGES, LFW_EVALUATIONS = 13_232, 53
MEGAFACE_IMAGES, MEGAFACE_MODELS = 4_324 + 4_069, 18
#: round 4 (SphereFace-4 candidates): the lfw profile's own counts: models of SphereFace-4 (04 15, 06 12) and of
#: SphereFace-10 (05: 6), LFW evaluations of SphereFace-4 (04 15, 05 6, 06 18) and of SphereFace-10 (05: 6); the cost
#: of SphereFace-10 over SphereFace-4 at width 0.25 on these crops (the lfw run's pool logs: about 830 / 2,330 img/s)
SF4_MODELS, SF4_SF10_MODELS, SF4_LFW_EVALUATIONS, SF4_SF10_EVALUATIONS, SF10_OVER_SF4 = 27, 6, 39, 6, 2.8


def feature_seconds_per_image(bench: E.Benchmark, recipe: E.Recipe) -> float:
    """CPU seconds / 2 (wall on the quiet 2-core machine) to feature one validation image with ``recipe``'s
    softmax model (seed 0), flip-concatenated as every test protocol does."""
    model = E.train_row(bench, "softmax", recipe, 0, R.CACHE)
    start = time.process_time()
    E.features(model, bench.lfw)
    return (time.process_time() - start) / len(bench.lfw) / 2


def profile_minutes(recipe: E.Recipe, per_model: float, per_image: float) -> float:
    """Criterion 4's estimate of the lfw profile's wall time (minutes) from a candidate's seconds per model and per
    featured image."""
    if recipe.backbone == "sphereface4":  # round 4
        models = SF4_MODELS + SF10_OVER_SF4 * SF4_SF10_MODELS
        images = LFW_IMAGES * (SF4_LFW_EVALUATIONS + SF10_OVER_SF4 * SF4_SF10_EVALUATIONS) + MEGAFACE_IMAGES * MEGAFACE_MODELS
    else:
        models, images = R.R4_SF10_EQUIVALENTS, LFW_IMAGES * LFW_EVALUATIONS + MEGAFACE_IMAGES * MEGAFACE_MODELS
    return (models * per_model + per_image * images + R.R4_REST_S) / 60


def study(bench: E.Benchmark, name: str, recipe: E.Recipe, rows: dict[str, tuple[int, ...]],
          partial: Path | None = None, all_rows: bool = False) -> dict:
    """Round 4's rows and criteria for one candidate (stopped at its first margin row that does not fit, unless
    ``all_rows``), priced as the lfw profile."""
    ln_c = math.log(bench.train.num_identities)
    screened = ROOT / "docs" / "recipe_study" / f"lfw_{name}_screen.json"
    timed = {(r["row"], r["seed"]): r for r in json.loads(screened.read_text())[name]["results"]
             if "failed" not in r} if screened.is_file() and rows is not SCREEN_ROWS else {}
    results = []
    for row, seeds in rows.items():
        for seed in seeds:
            results.append(R.run(bench, row, recipe, seed))
            r = results[-1]
            if (row, seed) in timed:  # trained by the screen: read from the cache now, so its cost is the screen's
                r.update(cpu_seconds=timed[row, seed]["cpu_seconds"], wall_seconds=timed[row, seed]["wall_seconds"])
            if partial is not None:  # every model's result is kept, even if the run is stopped later
                partial.write_text(json.dumps({name: {"recipe": recipe.__dict__, "results": results}}, indent=1,
                                              default=str) + "\n")
            print("   ", row, seed, r.get("failed") or f"final loss {r['final_loss']:.3f} val {r['val_acc']:.2f} "
                  f"cpu {r['cpu_seconds']:.0f} s", flush=True)
            if not all_rows and row in R.MARGIN_ROWS and r.get("final_loss", math.inf) > R.FIT_FRACTION * ln_c:
                break
        else:
            continue
        print("    stopped: criterion 1b decided by", row, seed, flush=True)
        break
    trained = all("failed" not in r and r["final_loss"] < 0.9 * ln_c for r in results)
    fits = all(r.get("final_loss", math.inf) <= R.FIT_FRACTION * ln_c for r in results if r["row"] in R.MARGIN_ROWS)
    soft = [r for r in results if r["row"] == "softmax" and "failed" not in r]
    level = max((R.levelled(r["losses"], ln_c) for r in soft), default=None)
    # wall ~ CPU / 2 on 2 cores; a model read from the cache is priced by its logged training seconds (round 4's rule)
    per_model = sum(R.model_cost(r) for r in results) / len(results) / 2
    per_image = feature_seconds_per_image(bench, recipe) if soft else None  # None: stopped before softmax
    minutes = None if per_image is None else profile_minutes(recipe, per_model, per_image)
    complete = len(results) == sum(len(s) for s in R.ROUND_ROWS[4].values())  # a screen is never complete
    return {"recipe": recipe.__dict__, "results": results, "ln_c": ln_c, "all_trained": trained,
            "margin_rows_fit": fits, "softmax_levelled": level, "s_per_model": per_model,
            "feature_s_per_image": per_image, "profile_minutes": minutes, "complete": complete,
            "passed": bool(complete and trained and fits and level is not None and level <= 0.02 and minutes is not None
                           and minutes < R.R4_BUDGET_MIN),
            "softmax_val_acc": sum(r["val_acc"] for r in soft) / len(soft) if soft else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the real-data folder (its train/ pack alone is opened)")
    parser.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--screen", action="store_true", help="train only the first model (m = 4, seed 0)")
    parser.add_argument("--lr", type=float, default=None, help="run the candidates at this lr (after divergence)")
    parser.add_argument("--all-rows", action="store_true",
                        help="train and report every row past a margin row that misses (written to lfw_<name>_rows.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = E.carve_validation(E.open_benchmark(str(args.data.resolve()), ROOT / "cache", ("train",)),
                               R.VALIDATION_IDENTITIES, ROOT / "cache")
    print(f"{len(bench.train)} training images of {bench.train.num_identities} identities "
          f"(ln C = {math.log(bench.train.num_identities):.3f}); {len(bench.lfw)} validation images", flush=True)
    for key in args.only:
        recipe = CANDIDATES[key] if args.lr is None else E.Recipe(**{**CANDIDATES[key].__dict__, "lr": args.lr})
        name = key if args.lr is None else f"{key}-lr{args.lr:g}"
        suffix = "_screen" if args.screen else "_rows" if args.all_rows else ""
        out = ROOT / "docs" / "recipe_study" / f"lfw_{name}{suffix}.json"
        result = study(bench, name, recipe, SCREEN_ROWS if args.screen else R.ROUND_ROWS[4], out, args.all_rows)
        out.write_text(json.dumps({name: result}, indent=1, default=str) + "\n")
        print(f"{name}: profile {result['profile_minutes']} min, feature {result['feature_s_per_image']} s/image, "
              f"passed {result['passed']}; wrote {out.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
