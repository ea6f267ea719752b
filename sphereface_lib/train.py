"""Command line: ``python -m sphereface_lib.train --config configs/tiny_cpu.yaml [key=value ...]``.

Overrides use dotted keys and YAML values, e.g. ``optim.lr=0.01 optim.lr_steps=[100,200] run.device=cpu``.
Start it with ``torchrun --nproc_per_node N -m sphereface_lib.train ...`` for data-parallel training.
A mistake in the config, the data or the run folder is one ``error:`` line and exit status 2 (before
training starts); a divergence is an ``error:`` line and exit status 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
from typing import Sequence

from .errors import run_command
from .training import TrainConfig, TrainingDiverged, train

EXIT_DIVERGED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and train; a user's mistake raises :class:`~sphereface_lib.errors.UserError`."""
    parser = argparse.ArgumentParser(prog="python -m sphereface_lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a YAML file (see configs/)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if run.out_dir holds a checkpoint")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log the full config (DEBUG)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.01")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    config = TrainConfig.from_yaml(args.config, args.overrides)
    try:
        train(config, resume=not args.no_resume)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


class _TrainModule(types.ModuleType):
    """Importing this module makes ``sphereface_lib.train`` name the module instead of the re-exported
    function ``train``; calling the module trains, so ``sphereface_lib.train(config)`` works either way."""

    def __call__(self, config: TrainConfig, *, resume: bool = True):
        return train(config, resume=resume)


sys.modules[__name__].__class__ = _TrainModule

if __name__ == "__main__":
    sys.exit(run_command(main))
