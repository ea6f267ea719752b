"""The typed training configuration: one dataclass tree, loadable from YAML, saved with every checkpoint.

Defaults are the paper's CASIA-WebFace recipe (Section 4.1) and the official solver: SGD, momentum 0.9,
weight decay 5e-4, learning rate 0.1 divided by 10 at 16k and 24k iterations, stop at 28k, global batch
512 (256 per GPU on 2 GPUs), SphereFace-20 with A-Softmax m=4 and the official lambda annealing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import UserError


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` / ``5e-4`` as floats (YAML 1.1 needs a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, with exponent floats such as ``5e-4``."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(UserError):
    """A configuration file or override is invalid; the message names the key and the source."""


@dataclass
class DataConfig:
    """Which images train the model and how each batch is drawn."""

    #: a packed dataset folder (``PackedWriter`` / data_prep output) or ``synthetic:<size>`` (built-in data)
    path: str = "data/casia_webface_112x96"
    sampler: str = "random"  #: a name known to ``create_sampler``
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    flip: bool = True  #: random horizontal flip (the paper's only augmentation)
    prefetch: int = 4  #: batches gathered ahead by the loader thread


@dataclass
class ModelConfig:
    """The backbone (Table 2 of the paper); channels and input size come from the dataset."""

    backbone: str = "sphereface20"
    width: float = 1.0
    feat_dim: int = 512


@dataclass
class HeadConfig:
    """The head (classifier + loss) by registry name; ``kwargs`` go to ``create_head``.

    A ``lambda_schedule`` mapping in ``kwargs`` becomes a ``LambdaSchedule`` (A-Softmax annealing).
    """

    name: str = "asoftmax"
    kwargs: dict[str, Any] = field(default_factory=lambda: {
        "m": 4, "lambda_schedule": {"base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0}})


@dataclass
class OptimConfig:
    """SGD with step decay, iteration based (the official solver)."""

    iterations: int = 28000
    batch_size: int = 512  #: the GLOBAL batch, split evenly over data-parallel ranks
    lr: float = 0.1
    lr_steps: list[int] = field(default_factory=lambda: [16000, 24000])
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    #: the prototxt's lr_mult 2 / decay_mult 0 for the biases of stride-2 convolutions and fc layers
    caffe_bias_mult: bool = True


@dataclass
class RunConfig:
    """Where and how the run executes; none of it changes the mathematics except ``device``/``amp``."""

    out_dir: str = "runs/sphereface20_casia_m4"
    seed: int = 0
    device: str = "auto"  #: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  #: "auto" (bf16 on cuda, none on cpu), "bf16" or "none"
    channels_last: bool = True
    compile: bool = False
    log_every: int = 50
    checkpoint_every: int = 1000
    progress: bool = True


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> "TrainConfig":
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`."""
        config = _build(cls, raw, prefix="", source=source)
        config.validate(source)
        return config

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> "TrainConfig":
        """Load a YAML file, then apply ``key=value`` overrides (dotted keys, YAML values)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                              "pass a YAML file such as configs/tiny_cpu.yaml")
        try:
            raw = load_yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}{_yaml_problem(exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
        apply_overrides(raw, overrides)
        source = str(path) + (f" (with overrides {' '.join(overrides)})" if overrides else "")
        return cls.from_dict(raw, source)

    def replace(self, *overrides: str) -> "TrainConfig":
        """A copy with ``key=value`` overrides applied (e.g. ``"optim.lr=0.01"``)."""
        raw = self.to_dict()
        apply_overrides(raw, overrides)
        return TrainConfig.from_dict(raw, source=f"overrides {' '.join(overrides)}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self, source: str = "<config>") -> None:
        """Raise :class:`ConfigError` for values no run can use (names included: backbone, head, sampler)."""
        from ..backbones import list_backbones
        from ..data.samplers import list_samplers
        from ..losses import list_heads

        o, r, d, m = self.optim, self.run, self.data, self.model
        floats = {"optim.lr": o.lr, "optim.lr_gamma": o.lr_gamma, "optim.momentum": o.momentum,
                  "optim.weight_decay": o.weight_decay, "model.width": m.width}
        checks = [(math.isfinite(v), key, f"must be a finite number, got {v}") for key, v in floats.items()] + [
            (o.iterations >= 1, "optim.iterations", "must be >= 1"),
            (o.batch_size >= 1, "optim.batch_size", "must be >= 1"),
            (o.lr > 0, "optim.lr", "must be > 0"),
            (0 < o.lr_gamma <= 1, "optim.lr_gamma", "must lie in (0, 1]"),
            (list(o.lr_steps) == sorted(o.lr_steps) and all(s > 0 for s in o.lr_steps),
             "optim.lr_steps", "must be positive and increasing"),
            (o.momentum >= 0 and o.weight_decay >= 0, "optim.momentum/weight_decay", "must be >= 0"),
            (r.log_every >= 1, "run.log_every", "must be >= 1"),
            (r.checkpoint_every >= 1, "run.checkpoint_every", "must be >= 1"),
            (r.amp in ("auto", "bf16", "none"), "run.amp", "must be 'auto', 'bf16' or 'none'"),
            (bool(r.out_dir), "run.out_dir", "must name a folder"),
            (d.prefetch >= 1, "data.prefetch", "must be >= 1"),
            (m.width > 0, "model.width", f"must be positive, got {m.width}"),
            (m.feat_dim >= 1, "model.feat_dim", f"must be >= 1, got {m.feat_dim}"),
            (m.backbone in list_backbones(), "model.backbone",
             f"{m.backbone!r} is unknown; choose one of {', '.join(list_backbones())}"),
            (self.head.name in list_heads(), "head.name",
             f"{self.head.name!r} is unknown; choose one of {', '.join(list_heads())}"),
            (d.sampler in list_samplers(), "data.sampler",
             f"{d.sampler!r} is unknown; choose one of {', '.join(list_samplers())}"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(f"{source}: {key} {what}")


def apply_overrides(raw: dict[str, Any], overrides: typing.Iterable[str]) -> None:
    """Apply ``a.b.c=value`` overrides in place; values are parsed as YAML (``1e-3``, ``[1, 2]``, ``true``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.01")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value{_yaml_problem(exc)}") from None
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``, line L, column C: not valid YAML (problem)`` in one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
    return f"{where}: not valid YAML ({problem})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key, source)
            except ConfigError:
                pass
        raise bad
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_check_value(v, args[0] if args else Any, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise bad


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + unknown[0]!r}; valid keys here: {', '.join(sorted(names))}")
    values = {}
    for name, value in raw.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{prefix}{name}.", source)
        else:
            values[name] = _check_value(value, tp, f"{prefix}{name}", source)
    return cls(**values)
