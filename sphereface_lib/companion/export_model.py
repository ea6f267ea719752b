"""Export a model that a profile's notebooks trained (read from the model cache) as the ``model.pt2`` that
``python -m sphereface_lib.evaluate ... --model`` scores: the route from ``make reproduce`` to the evaluation CLI.

    python -m sphereface_lib.companion.export_model --profile lfw --data DATA --row asoftmax_m4 --seed 0 \\
        --out runs/lfw_m4/model.pt2

The recipe is notebook 06's (Table 4's rows; notebook 04 trains the same A-Softmax and softmax models) under the
profile, ``--data`` and ``--param`` overrides, exactly as ``make reproduce`` resolves them. Nothing is trained: a
model missing from the cache is an error naming the command that trains it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import UserError, run_command
from . import experiments as E
from .reproduce import PROFILES, Layout, ReproduceError, _default_value, data_parameter, declared_parameters, \
    parse_overrides, resolve_parameters

#: the notebook whose parameters define the exported model's recipe
STEM = "06_lfw_ytf_comparison"


def notebook_parameters(profile: str, data: str | None, overrides: dict) -> dict:
    """Notebook 06's parameters under ``profile``: its defaults, then the profile's values, ``data`` and overrides."""
    layout = Layout()
    values = {name: value for name, spec in declared_parameters(layout.notebook(STEM)).items()
              for literal, value in [_default_value(spec)] if literal}
    values.update(resolve_parameters(layout, profile, STEM, None if data is None else data_parameter(layout, data),
                                     overrides))
    return values


def recipe_of(parameters: dict) -> E.Recipe:
    """The training recipe that notebook parameters describe (the fields of :class:`~.experiments.Recipe` they set)."""
    return E.Recipe(**{f.name: parameters[f.name] for f in dataclasses.fields(E.Recipe) if f.name in parameters})


def cached_model(profile: str, data: str | None, row: str, seed: int, overrides: dict) -> E.TrainResult:
    """The trained model of ``row`` and ``seed`` under ``profile``, from the model cache (never trained here)."""
    from ..training.cache import cache_plan

    p = notebook_parameters(profile, data, overrides)
    recipe = recipe_of(p)
    bench = E.open_benchmark(p["data"], p["cache_dir"], ("train",), p["size"])
    entry = E.resolve_path(p["cache_dir"]) / "models" / cache_plan(E.train_config(bench, row, recipe, seed)).key
    if not (entry / "done.json").is_file():
        how = f"make reproduce PROFILE={profile}" + (f" DATA={data}" if data else "")
        raise UserError(f"--row {row} --seed {seed}: profile {profile!r} has not trained this model ({entry} is not a "
                        f"finished cache entry); train it with `{how}` first (notebook 06 trains seeds {p['seeds']})")
    return E.train_row(bench, row, recipe, seed, p["cache_dir"])


def export(model: E.TrainResult, path: Path) -> Path:
    """``model``'s backbone as a ``torch.export`` program with a dynamic batch (float (B, C, H, W) images of its
    training set's size in, (B, D) features out), written atomically to ``path``."""
    from ..data.packed import PackedDataset

    h, w, c = PackedDataset(model.config.data.path).manifest.image_shape
    example = torch.zeros(2, c, h, w, device=model.device)
    program = torch.export.export(model.backbone.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")  # torch.export wants a name ending in .pt2
    torch.export.save(program, str(partial))
    os.replace(partial, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--data", help="the real-data folder the profile ran on (as make reproduce DATA=)")
    parser.add_argument("--row", default="asoftmax_m4", help="a row of notebook 06 (e.g. softmax, asoftmax_m4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="the overrides the profile ran with (make reproduce PARAMS=)")
    parser.add_argument("--out", type=Path, default=Path("model.pt2"))
    args = parser.parse_args(argv)
    try:
        model = cached_model(args.profile, args.data, args.row, args.seed, parse_overrides(args.param))
    except ReproduceError as exc:
        raise UserError(str(exc)) from None
    lfw, pairs = "<an aligned LFW pack>", "<its pairs.txt>"
    if args.data:
        lfw = Path(args.data) / "lfw"
        pairs = next((p for p in (lfw / "pairs.txt", lfw.parent / "pairs.txt") if p.is_file()), pairs)
    print(f"exported {export(model, args.out)}; score it with:\n  python -m sphereface_lib.evaluate lfw --images {lfw} "
          f"--model {args.out} --pairs {pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
