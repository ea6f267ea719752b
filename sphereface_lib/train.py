"""Command line: ``python -m sphereface_lib.train --config configs/tiny_cpu.yaml [key=value ...]``.

Overrides use dotted keys and YAML values, e.g. ``optim.lr=0.01 optim.lr_steps=[100,200] run.device=cpu``.
Start it with ``torchrun --nproc_per_node N -m sphereface_lib.train ...`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import sys
import types

from .training import ConfigError, TrainConfig, TrainingDiverged, train


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, print where the checkpoint is; exit status 2 for bad config, 3 for divergence."""
    parser = argparse.ArgumentParser(prog="python -m sphereface_lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a YAML file (see configs/)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if run.out_dir holds a checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=0.01")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_yaml(args.config, args.overrides)
        result = train(config, resume=not args.no_resume)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    last = result.metrics[-1] if result.metrics else {}
    print(f"done: {result.iteration} iterations, checkpoint {result.checkpoint}, last log {last}")
    return 0


class _TrainModule(types.ModuleType):
    """Importing this module makes ``sphereface_lib.train`` name the module instead of the re-exported
    function ``train``; calling the module trains, so ``sphereface_lib.train(config)`` works either way."""

    def __call__(self, config: TrainConfig, *, resume: bool = True):
        return train(config, resume=resume)


sys.modules[__name__].__class__ = _TrainModule

if __name__ == "__main__":
    sys.exit(main())
