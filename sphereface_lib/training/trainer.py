"""The training loop: packed dataset -> backbone + head -> checkpoints and a metrics log.

One code path for one process and for ``torchrun`` data parallelism (DistributedDataParallel over
backbone and head together; each rank takes its contiguous slice of the sampler's global batch).
A run folder has one writer (a file lock held by rank 0 for the whole run); every file in it is written
atomically or, for the metrics log, appended whole rows at a time. Progress is reported through ``logging``.
The recipe is the paper's (Section 4.1) and the official solver's: SGD with momentum, step decay of the
learning rate, the head's lambda stepped every iteration, horizontal flip, (x - 127.5) / 128.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..backbones import create_backbone
from ..data.packed import Manifest, PackedDataset, atomic_write, atomic_write_text, remove_stale_temporaries
from ..data.samplers import BatchSampler, create_sampler
from ..data.sources import check_shard_count, is_shard_set, open_packed
from ..errors import OutputWriteError, UserError, storage_error
from ..locking import writer_lock
from ..losses import Head, LambdaSchedule, create_head
from .config import ConfigError, TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
METRICS_CSV_NAME = "metrics.csv"
LOCK_NAME = ".lock"
OWNER_NAME = ".lock.owner"
CHECKPOINT_FORMAT = 1
_CHECKPOINT_KEYS = ("format", "config", "dataset", "iteration", "backbone", "head", "optimizer", "rng_cpu")
_RESUMED_KEYS = ("iteration", "backbone", "head", "optimizer", "rng_cpu", "rng_cuda")  # what rank 0 broadcasts
_FLIP_STREAM = 0x666C6970  # separates the flip random stream from the sampler's
_RESUME_FIX = "start over with --no-resume (train(config, resume=False)) or choose another run.out_dir"

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped without checkpointing the broken weights."""


class RunFileError(UserError):
    """A file of a run folder (checkpoint, metrics log) is corrupt or foreign; the message names it and the fix."""


class RunDirBusy(UserError):
    """Another process holds the run folder's lock; the message names it (pid, host, start time)."""


@dataclass
class TrainResult:
    """A trained model (eval mode, on ``device``), its config and its metrics log (rows of
    iteration, loss, acc, the head's values such as lambda, lr, img_per_s; empty on DDP ranks > 0)."""

    backbone: nn.Module
    head: Head
    config: TrainConfig
    metrics: list[dict[str, Any]]
    iteration: int
    checkpoint: Path | None
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; other names as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"run.device: {name!r} is not a device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device is {name!r} but CUDA is not available; use run.device=cpu or auto")
    return device


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (bf16) or None for full float32."""
    amp = config.run.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return torch.bfloat16 if amp == "bf16" else None


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """Base learning rate at ``iteration``: lr * lr_gamma ** (number of lr_steps already reached)."""
    o = config.optim
    return o.lr * o.lr_gamma ** sum(iteration >= s for s in o.lr_steps)


def build_head(config: TrainConfig, num_classes: int) -> Head:
    """The configured head; a ``lambda_schedule`` mapping becomes a :class:`LambdaSchedule`. Arguments the
    head refuses raise :class:`ConfigError` naming ``head.name`` / ``head.kwargs``."""
    kwargs = dict(config.head.kwargs)
    if isinstance(kwargs.get("lambda_schedule"), dict):
        try:
            kwargs["lambda_schedule"] = LambdaSchedule(**kwargs["lambda_schedule"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"head.kwargs.lambda_schedule {kwargs['lambda_schedule']}: {exc}") from None
    try:
        return create_head(config.head.name, config.model.feat_dim, num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"head {config.head.name!r} with head.kwargs {config.head.kwargs}: {exc}") from None


def build_model(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, Head]:
    """(backbone, head) for images of shape (H, W, C) and ``num_classes`` identities, seeded by run.seed;
    arguments the backbone refuses raise :class:`ConfigError` naming ``model.*``."""
    torch.manual_seed(config.run.seed)
    h, w, c = image_shape
    m = config.model
    try:
        backbone = create_backbone(m.backbone, in_channels=c, input_size=(h, w), width=m.width, feat_dim=m.feat_dim)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model (backbone {m.backbone!r}, width {m.width}, feat_dim {m.feat_dim}) on {h}x{w}x{c} images: {exc}"
        ) from None
    return backbone, build_head(config, num_classes)


def local_batch_size(config: TrainConfig, world_size: int) -> int:
    """Each rank's share of ``optim.batch_size``; :class:`ConfigError` when it does not divide evenly."""
    b = config.optim.batch_size
    if b % world_size:
        raise ConfigError(f"optim.batch_size {b} must be divisible by the number of processes {world_size}")
    return b // world_size


def build_sampler(config: TrainConfig, labels: np.ndarray, shard: int | None = None, world_size: int = 1
                  ) -> BatchSampler:
    """The configured batch sampler over ``labels``: the global batch, or with ``shard`` (a rank reading its own
    shard) that rank's local batch, seeded by (run.seed, shard). Arguments it refuses raise :class:`ConfigError`."""
    d = config.data
    batch, seed = config.optim.batch_size, config.run.seed
    if shard is not None:
        batch, seed = local_batch_size(config, world_size), (config.run.seed, shard)
    try:
        return create_sampler(d.sampler, labels, batch, seed, **d.sampler_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.sampler {d.sampler!r} with data.sampler_kwargs {d.sampler_kwargs}: {exc}") from None


def param_groups(backbone: nn.Module, head: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters in SGD groups; with ``optim.caffe_bias_mult`` the biases of the stride-2
    convolutions and fully connected layers get lr_mult 2 and decay_mult 0 (the official prototxt).

    Residual convolution biases are frozen in the backbone (lr_mult 0) and so appear in no group.
    """
    o = config.optim
    regular, biases = [], []
    for module in (backbone, head):
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            is_bias = name.endswith("bias") and p.ndim == 1
            (biases if (o.caffe_bias_mult and is_bias) else regular).append(p)
    groups = [{"params": regular, "lr_mult": 1.0, "weight_decay": o.weight_decay}]
    if biases:
        groups.append({"params": biases, "lr_mult": 2.0, "weight_decay": 0.0})
    return groups


def make_optimizer(backbone: nn.Module, head: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD, momentum and weight decay from the config, with the param groups of :func:`param_groups`."""
    return torch.optim.SGD(
        param_groups(backbone, head, config), lr=config.optim.lr, momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay)


def flip_mask(seed: int, iteration: int, batch_size: int) -> np.ndarray:
    """Which images of the global batch of ``iteration`` are flipped: a pure function of (seed, iteration)."""
    return np.random.default_rng([seed, iteration, _FLIP_STREAM]).random(batch_size) < 0.5


def augment(images: Tensor, flip: Tensor | None, channels_last: bool) -> Tensor:
    """uint8 (B, H, W, C) on the training device -> float (B, C, H, W), flipped where ``flip``,
    normalized as (x - 127.5) / 128 (the paper's preprocessing)."""
    x = images.permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0)
    if flip is not None:
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class BatchLoader:
    """Gathers each rank's slice of the sampler's batches from the memory map in a background thread.

    Yields (iteration, images uint8 (b, H, W, C), labels int64 (b,), flip bool (b,) or None), pinned
    when the training device is a GPU, ``prefetch`` batches ahead. With ``sharded`` the dataset is this rank's
    own shard and the sampler draws the whole local batch from it (see :func:`build_sampler`).
    """

    def __init__(
        self, dataset: PackedDataset, config: TrainConfig, start: int, stop: int,
        rank: int = 0, world_size: int = 1, pin: bool = False, sampler: BatchSampler | None = None,
        sharded: bool = False,
    ) -> None:
        b = config.optim.batch_size
        self.dataset, self.start, self.stop, self.pin = dataset, start, stop, pin
        self.global_batch, self.local_batch = b, local_batch_size(config, world_size)
        self.lo = rank * self.local_batch
        self.seed, self.flip = config.run.seed, config.data.flip
        self.sampler = sampler if sampler is not None else build_sampler(
            config, dataset.labels, rank if sharded else None, world_size)
        self.row_lo = 0 if sharded else self.lo  # where this rank's rows start in the sampler's batch
        self._queue: queue.Queue = queue.Queue(maxsize=config.data.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="BatchLoader")
        self._thread.start()

    def batch(self, iteration: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """This rank's (images, labels, flip) of ``iteration``."""
        rows = self.sampler.indices(iteration)[self.row_lo:self.row_lo + self.local_batch]
        images = torch.from_numpy(np.ascontiguousarray(self.dataset.images[rows]))
        labels = torch.from_numpy(np.asarray(self.dataset.labels[rows], dtype=np.int64))
        flip = None
        if self.flip:
            flip = torch.from_numpy(flip_mask(self.seed, iteration, self.global_batch)[self.lo:self.lo + self.local_batch])
        if self.pin:
            images, labels = images.pin_memory(), labels.pin_memory()
            flip = flip.pin_memory() if flip is not None else None
        return images, labels, flip

    def _work(self) -> None:
        try:
            for it in range(self.start, self.stop):
                item = (it, *self.batch(it))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._queue.put(exc)

    def __iter__(self) -> Iterator[tuple[int, Tensor, Tensor, Tensor | None]]:
        for _ in range(self.start, self.stop):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Net(nn.Module):
    """Backbone and head as one module, so DDP synchronizes the head's weights too."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.head.compute_loss(self.backbone(images), labels)


class TrainStep:
    """One SGD iteration: head.update, learning rate, augmentation on device, autocast forward, backward, step."""

    def __init__(
        self, backbone: nn.Module, head: Head, optimizer: torch.optim.Optimizer, config: TrainConfig,
        device: torch.device, world_size: int = 1,
    ) -> None:
        self.backbone, self.head, self.optimizer, self.config, self.device = backbone, head, optimizer, config, device
        self.net = _Net(backbone, head).to(device)
        if config.run.channels_last:
            self.net.to(memory_format=torch.channels_last)
        module: nn.Module = self.net
        if world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.module = torch.compile(module) if config.run.compile else module
        self.dtype = amp_dtype(config, device)

    def __call__(
        self, iteration: int, images: Tensor, labels: Tensor, flip: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Train on one batch; returns (loss, logits or None, labels), all detached, on the device."""
        self.head.update(iteration)
        lr = learning_rate(self.config, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        nb = self.device.type == "cuda"
        x = augment(images.to(self.device, non_blocking=nb),
                    flip.to(self.device, non_blocking=nb) if flip is not None else None,
                    self.config.run.channels_last)
        y = labels.to(self.device, non_blocking=nb)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext())
        self.optimizer.zero_grad(set_to_none=True)
        with autocast, self._eager_backward_autocast():
            loss, logits = self.module(x, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.detach() if logits is not None else None), y


    def _eager_backward_autocast(self) -> ContextManager[Any]:
        """A compiled module's backward under the autocast its forward ran with, op by op, as in eager mode: torch's
        default builds the whole backward under the caller's autocast, so the heads' float32 backward ran in bf16
        (errors of about 0.4% in their gradients; pytorch/pytorch#153044)."""
        if not self.config.run.compile or self.dtype is None:
            return nullcontext()
        return torch._functorch.config.patch(backward_pass_autocast="off")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def _library_version() -> str:
    from .. import __version__
    return __version__


def _math_fields(config: TrainConfig) -> dict[str, Any]:
    """The parts of a config that change the weights at a given iteration (resume must match them);
    ``optim.iterations`` is not one of them, so a finished run can be extended."""
    d = config.to_dict()
    d["optim"].pop("iterations")
    run = d.pop("run")
    d["seed"] = run["seed"]
    d["amp"] = run["amp"]
    return d


def _first_line(exc: BaseException) -> str:
    """``Type: first sentence`` of an exception (torch's messages run to paragraphs)."""
    text = str(exc).strip().split("\n")[0].split(". ")[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_checkpoint(path: Path, fix: str = _RESUME_FIX) -> tuple[dict[str, Any], TrainConfig]:
    """The state dict of a checkpoint file (tensors only, on the CPU) and the config stored in it; a file
    that is truncated, corrupt or not this library's raises :class:`RunFileError` naming it and ``fix``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        raise RunFileError(f"{path} is not a readable checkpoint ({_first_line(exc)}); {fix}") from None
    if not isinstance(state, dict):
        raise RunFileError(f"{path} holds a {type(state).__name__}, not a checkpoint of this library; {fix}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if state.get("format") != CHECKPOINT_FORMAT or missing:
        raise RunFileError(
            f"{path}: not a checkpoint this library reads (format {state.get('format')!r}, expected "
            f"{CHECKPOINT_FORMAT}{'; missing ' + ', '.join(missing) if missing else ''}); {fix}")
    try:
        config = TrainConfig.from_dict(state["config"], source=f"{path} (stored config)")
    except ConfigError as exc:
        raise RunFileError(f"{exc}; {fix}") from None
    return state, config


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainResult:
    """Rebuild backbone and head (eval mode) from a checkpoint or a run folder holding ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    fix = "train the model again or load another checkpoint"
    state, config = read_checkpoint(path, fix)
    ds = state["dataset"]
    try:
        backbone, head = build_model(config, (ds["height"], ds["width"], ds["channels"]), ds["num_identities"])
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
    except (KeyError, TypeError, RuntimeError, ConfigError) as exc:
        raise RunFileError(f"{path}: its weights do not fit its stored config ({_first_line(exc)}); {fix}") from None
    device = torch.device(device)
    metrics = _read_metrics(path.parent / METRICS_NAME, int(state["iteration"]), fix)
    return TrainResult(backbone.to(device).eval(), head.to(device).eval(), config, metrics,
                       int(state["iteration"]), path, device)


def _read_metrics(path: Path, up_to: int, fix: str = _RESUME_FIX) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` up to iteration ``up_to``. A torn last line (a run killed while writing
    it) is dropped with a warning; any other unreadable line raises :class:`RunFileError`."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
                raise ValueError("not a row with an integer 'iteration'")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if all(not rest.strip() for rest in lines[lineno:]):
                logger.warning("%s, line %d: dropped a torn last row (a run stopped while writing it)", path, lineno)
                break
            raise RunFileError(f"{path}, line {lineno}: not a metrics row ({_first_line(exc)}); {fix}") from None
        rows.append(row)
    return [r for r in rows if r["iteration"] <= up_to]


class MetricsLog:
    """The run's metrics log: ``metrics.jsonl`` (one JSON object per row) and ``metrics.csv`` (the same rows,
    with a header, for a spreadsheet or pandas). Appends are rolled back when the disk is full."""

    def __init__(self, out: Path) -> None:
        self.jsonl, self.csv = out / METRICS_NAME, out / METRICS_CSV_NAME
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []

    def restart(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite both files atomically with ``rows`` (what a resumed run keeps)."""
        self.rows = list(rows)
        self.columns = _columns(self.rows)
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        atomic_write_text(self.csv, _csv_text(self.columns, self.rows, header=True))

    def append(self, row: dict[str, Any]) -> None:
        """Add one row to both files; when a write fails, both files keep the rows they had."""
        rows = [*self.rows, row]
        columns = _columns(rows) if any(k not in self.columns for k in row) else self.columns
        csv_size = self.csv.stat().st_size
        if columns is not self.columns:  # a new column: the header changes
            atomic_write_text(self.csv, _csv_text(columns, rows, header=True))
        else:
            _append(self.csv, _csv_text(columns, [row], header=False))
        try:
            _append(self.jsonl, json.dumps(row) + "\n")
        except BaseException:  # the jsonl is as it was: take the row out of the csv too
            if columns is self.columns:
                os.truncate(self.csv, csv_size)
            else:
                atomic_write_text(self.csv, _csv_text(self.columns, self.rows, header=True))
            raise
        self.rows, self.columns = rows, columns


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return list(columns)


def _csv_text(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path``; when the write fails the file is cut back to its previous length."""
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise (storage_error(path, exc) or exc) from exc
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass  # a torn last line, dropped on resume
            raise (storage_error(path, exc) or exc) from exc
    finally:
        os.close(fd)


def run_lock(out: Path) -> ContextManager[None]:
    """Hold ``out/.lock`` (with the owner's pid, host and start time in ``out/.lock.owner``) while the block
    runs; when another process holds it, raise :class:`RunDirBusy` naming that process."""
    return writer_lock(out / LOCK_NAME, out / OWNER_NAME, f"run.out_dir {out}",
                       "one run folder takes one writer: wait for that run to end, or choose another run.out_dir",
                       RunDirBusy)


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir {out} is a file, not a folder; choose another run.out_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"run.out_dir {out}: cannot create the folder ({exc.strerror}); "
                          "choose another run.out_dir") from None


def _distributed() -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, created) from torchrun's environment; initializes the group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    created = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        created = True
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), created


def wait_for_all_ranks() -> None:
    """Return once every rank of the default group has called this: before any tears the group down (gloo
    aborted a rank that left first).

    On gloo a monitored barrier, not ``dist.barrier``: a barrier's work keeps the last all-reduces' tensors,
    which a gloo thread frees after the barrier returns and needs the GIL for; in a process that has already
    begun to exit, that aborts it (SIGABRT, "terminate called without an active exception").
    """
    if dist.get_backend() == "gloo":
        dist.monitored_barrier()
    else:
        dist.barrier()


def train(config: TrainConfig, *, resume: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``config``; returns the final model and its metrics log.

    Writes ``run.out_dir/checkpoint.pt`` (atomically) every ``run.checkpoint_every`` iterations and at the
    end, and a row of ``metrics.jsonl`` / ``metrics.csv`` every ``run.log_every`` iterations, holding the
    folder's lock (``.lock``) throughout. Mistakes in the config, the data or the run folder (including a
    corrupt checkpoint, another process on the folder, a full disk) raise a
    :class:`~sphereface_lib.errors.UserError` before the first iteration where they can be known; a NaN or
    infinite loss raises :class:`TrainingDiverged`.
    """
    check_shard_count(config.data.path, int(os.environ.get("WORLD_SIZE", "1")))  # before gloo/NCCL start
    rank, world, local_rank, created_group = _distributed()
    device = resolve_device(config.run.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    try:
        result = _train(config, resume, device, rank, world)
        if created_group:
            wait_for_all_ranks()
        return result
    finally:
        if created_group:
            dist.destroy_process_group()


def _data_signature(dataset: PackedDataset) -> tuple[Any, ...]:
    """What every rank's pack must share for one model: image shape, identity count and names."""
    names = hashlib.sha1("\n".join(dataset.identities).encode("utf-8")).hexdigest()[:16]
    return (*dataset.manifest.image_shape, dataset.num_identities, names)


def _open_data(config: TrainConfig, rank: int, world: int) -> PackedDataset:
    """This rank's pack. With several processes every rank learns every rank's outcome: a pack one rank cannot
    open, or one unlike rank 0's (another pack's shard, another copy), is one :class:`UserError` on every rank
    before the model is built, not a hang or a DistributedDataParallel shape error."""
    dataset: PackedDataset | None = None
    error: UserError | None = None
    try:
        dataset = open_packed(config.data.path, rank, world)
    except UserError as exc:
        error = exc
    if world == 1:
        if error is not None:
            raise error
        return dataset
    mine = (None if error is None else str(error), None if dataset is None else _data_signature(dataset),
            None if dataset is None else str(dataset.root))
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, mine)
    if error is not None:
        raise error
    for r, (message, _, _) in enumerate(everyone):
        if message is not None:
            raise UserError(f"rank {r} of {world}: {message}")
    _, first, first_root = everyone[0]
    for r, (_, signature, root) in enumerate(everyone):
        if signature != first:
            h, w, c, n = first[:4]
            h2, w2, c2, n2 = signature[:4]
            raise UserError(
                f"data.path: rank {r} reads {root} ({h2}x{w2}x{c2} images of {n2} identities) "
                f"but rank 0 reads {first_root} ({h}x{w}x{c}, {n} identities"
                f"{', other identity names' if (h, w, c, n) == (h2, w2, c2, n2) else ''}); every process needs the "
                "same pack, or its own shard of one pack: copy the same pack to every machine, or write the shards "
                "again with write_shards")
    return dataset


def _train(config: TrainConfig, resume: bool, device: torch.device, rank: int, world: int) -> TrainResult:
    dataset = _open_data(config, rank, world)
    sharded = is_shard_set(config.data.path)
    manifest = dataset.manifest
    out = Path(config.run.out_dir)
    if rank == 0:
        _prepare_out_dir(out)
    backbone, head = build_model(config, manifest.image_shape, manifest.num_identities)
    sampler = build_sampler(config, dataset.labels, rank if sharded else None, world)
    with run_lock(out) if rank == 0 else nullcontext():
        return _run(config, resume, device, rank, world, dataset, backbone, head, sampler, sharded)


def _load_resume_state(config: TrainConfig, ckpt_path: Path, backbone: nn.Module, head: Head,
                       manifest: Manifest) -> dict[str, Any]:
    """Read ``ckpt_path``, check that ``config`` may resume it and load its weights into backbone and head;
    returns the parts the other ranks need (:data:`_RESUMED_KEYS`). A foreign or broken checkpoint, one trained on
    images of another shape or with non-finite weights raises :class:`ConfigError` / :class:`RunFileError`
    naming it."""
    state, stored = read_checkpoint(ckpt_path)
    if _math_fields(stored) != _math_fields(config):
        raise ConfigError(
            f"{ckpt_path} was written by a different configuration; use another run.out_dir "
            "or start over with --no-resume (train(config, resume=False))")
    trained = state["dataset"]
    now = asdict(manifest)
    shape = ("height", "width", "channels", "num_identities")
    if not isinstance(trained, dict) or any(trained.get(k) != now[k] for k in shape):
        def described(m: Any) -> str:
            if not isinstance(m, dict):
                return "unknown images"
            return f"{m.get('height')}x{m.get('width')}x{m.get('channels')} images of {m.get('num_identities')} identities"
        raise RunFileError(
            f"{ckpt_path} was trained on {described(trained)}, but data.path {config.data.path} now holds "
            f"{described(now)}: its model does not take these images (input channels, size or classes); point "
            f"data.path at the pack it was trained on, or {_RESUME_FIX}")
    bad = [f"{part}.{name}" for part in ("backbone", "head") for name, t in state[part].items()
           if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise RunFileError(
            f"{ckpt_path} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}"
            f"{f' and {len(bad) - 3} more tensors' if len(bad) > 3 else ''}), so it cannot be resumed: delete it "
            "and resume from an earlier copy of it, or start over with --no-resume (train(config, resume=False)) "
            "or a new run.out_dir")
    try:
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
    except RuntimeError as exc:
        raise RunFileError(f"{ckpt_path}: its weights do not fit its config ({_first_line(exc)}); "
                           f"{_RESUME_FIX}") from None
    return {k: state[k] for k in _RESUMED_KEYS if k in state}


def _resume_state(config: TrainConfig, resume: bool, ckpt_path: Path, backbone: nn.Module, head: Head,
                  manifest: Manifest, rank: int, world: int) -> dict[str, Any] | None:
    """The checkpoint state to resume from (weights already loaded into backbone and head), or None to start
    at iteration 0. Only rank 0 reads its ``run.out_dir``; with several processes it broadcasts the state, so
    ranks on other machines (another or an empty ``run.out_dir``) resume in step, or its error, which every
    rank then raises (the same :class:`~sphereface_lib.errors.UserError`, not a hang)."""
    state: dict[str, Any] | None = None
    error: Exception | None = None
    if rank == 0 and resume and ckpt_path.is_file():
        try:
            state = _load_resume_state(config, ckpt_path, backbone, head, manifest)
        except Exception as exc:  # re-raised below on rank 0, after the other ranks have been told
            error = exc
    if world > 1:
        told = error if error is None or isinstance(error, UserError) else RuntimeError(
            f"rank 0 failed to read {ckpt_path}: {_first_line(error)}")
        box: list[Any] = [(state, told)]
        dist.broadcast_object_list(box, src=0)
        if rank != 0:
            state, told = box[0]
            if told is not None:
                raise told
            if state is not None:
                backbone.load_state_dict(state["backbone"])
                head.load_state_dict(state["head"])
    if error is not None:
        raise error
    return state


def _run(config: TrainConfig, resume: bool, device: torch.device, rank: int, world: int, dataset: PackedDataset,
         backbone: nn.Module, head: Head, sampler: BatchSampler, sharded: bool) -> TrainResult:
    """The loop, with the run folder's lock held by rank 0."""
    manifest = dataset.manifest
    out = Path(config.run.out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    log = MetricsLog(out)
    iterations = config.optim.iterations
    if rank == 0:
        for stale in (p for f in (ckpt_path, log.jsonl, log.csv) for p in remove_stale_temporaries(f)):
            logger.info("removed %s (left by a run stopped while writing)", stale)
        m, o = config.model, config.optim
        logger.info(
            "training %s (width %g, %d-d) + %s on %s (%d images, %d identities) for %d iterations, batch %d, "
            "lr %g, on %s (%d process%s) into %s", m.backbone, m.width, m.feat_dim, config.head.name,
            config.data.path, manifest.num_images, manifest.num_identities, iterations, o.batch_size, o.lr,
            device, world, "es" if world > 1 else "", out)
        logger.debug("training config:\n%s", config.to_yaml())

    optimizer = make_optimizer(backbone, head, config)
    state = _resume_state(config, resume, ckpt_path, backbone, head, manifest, rank, world)
    start = int(state["iteration"]) if state is not None else 0
    if state is not None:
        torch.set_rng_state(state["rng_cpu"])
        if rank == 0:
            logger.info("resuming from %s at iteration %d", ckpt_path, start)
    step = TrainStep(backbone, head, optimizer, config, device, world)
    if state is not None:  # after .to(device): optimizer state must follow the parameters
        optimizer.load_state_dict(state["optimizer"])
        if device.type == "cuda" and len(state.get("rng_cuda", ())):
            torch.cuda.set_rng_state(state["rng_cuda"], device)
    if rank == 0:  # the log is kept by rank 0; drop rows a killed run logged after its last checkpoint
        log.restart(_read_metrics(log.jsonl, start) if start else [])

    guard = _Guard(config, head, device, world)
    guard.last_checkpoint = start or None
    loader = BatchLoader(dataset, config, start, iterations, rank, world, pin=device.type == "cuda", sampler=sampler,
                         sharded=sharded)
    bar = None
    if rank == 0 and config.run.progress:
        from tqdm import tqdm
        bar = tqdm(total=iterations, initial=start, desc="train", unit="it", dynamic_ncols=True)
    step.net.train()
    window_start, t0 = start, time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    has_acc = True
    try:
        for it, images, labels, flip in loader:
            loss, logits, y = step(it, images, labels, flip)
            guard.observe(loss, it)
            loss_sum += loss.float()
            if logits is None:
                has_acc = False
            else:
                correct += (logits.argmax(1) == y).sum()
            done = it + 1
            if bar is not None:
                bar.update(1)
            if done % config.run.log_every == 0 or done == iterations:
                guard.check(done, ckpt_path)
                row = _log_row(optimizer, head, world, loss_sum, correct, has_acc, done, window_start, t0,
                               loader.local_batch)
                loss_sum.zero_()
                correct.zero_()
                window_start, t0 = done, time.perf_counter()
                if rank == 0:
                    log.append(row)
                    if bar is not None:
                        bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                         for k, v in row.items() if k not in ("iteration", "lr")})
            if done % config.run.checkpoint_every == 0 or done == iterations:
                guard.check(done, ckpt_path, weights=list(backbone.parameters()) + list(head.parameters()))
                if rank == 0:
                    _atomic_torch_save(_checkpoint_state(config, manifest, done, backbone, head, optimizer), ckpt_path)
                guard.last_checkpoint = done
    except OutputWriteError as exc:  # disk full (or the like) mid-run: say where the run can resume from
        since = (f"the checkpoint of iteration {guard.last_checkpoint}" if guard.last_checkpoint
                 else "iteration 0 (no checkpoint was written yet)")
        raise type(exc)(f"{exc}; then run the same command again: it resumes from {since}") from exc
    finally:
        loader.close()
        if bar is not None:
            bar.close()
    if rank == 0:
        last = log.rows[-1] if log.rows else {}
        logger.info("done: iteration %d, checkpoint %s, last row %s", max(start, iterations), ckpt_path, last)
    return TrainResult(backbone.eval(), head.eval(), config, log.rows, max(start, iterations), ckpt_path, device)


def _checkpoint_state(config: TrainConfig, manifest: Any, iteration: int, backbone: nn.Module, head: Head,
                      optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "dataset": asdict(manifest),
        "library_version": _library_version(),
        "torch_version": str(torch.__version__),
        "iteration": iteration,
        "backbone": backbone.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.zeros(0, dtype=torch.uint8),
    }


def _log_row(optimizer: torch.optim.Optimizer, head: Head, world: int, loss_sum: Tensor, correct: Tensor, has_acc: bool,
             done: int, window_start: int, t0: float, local_batch: int) -> dict[str, Any]:
    """Means over the log window (all ranks), the head's values, learning rate and global img/s."""
    stats = torch.stack([loss_sum.float(), correct.float()])
    if world > 1:
        dist.all_reduce(stats)
    loss_total, correct_total = stats.tolist()  # the one host synchronization of the window
    n_iter = done - window_start
    images = n_iter * local_batch * world
    row: dict[str, Any] = {
        "iteration": done,
        "loss": loss_total / (n_iter * world),
        "acc": correct_total / images if has_acc else None,
    }
    row.update(head.log_values())
    row["lr"] = optimizer.param_groups[0]["lr"]  # group 0 has lr_mult 1
    row["img_per_s"] = images / max(time.perf_counter() - t0, 1e-9)
    return row


class _Guard:
    """Divergence guard: records the first iteration with a non-finite loss on the device (no sync)
    and raises :class:`TrainingDiverged` when checked (at logging and before every checkpoint)."""

    def __init__(self, config: TrainConfig, head: Head, device: torch.device, world: int) -> None:
        self.config, self.head, self.world = config, head, world
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.last_checkpoint: int | None = None

    def observe(self, loss: Tensor, iteration: int) -> None:
        self.first_bad.masked_fill_((~torch.isfinite(loss)) & (self.first_bad < 0), iteration)

    def check(self, done: int, ckpt_path: Path, weights: list[Tensor] | None = None) -> None:
        flag = self.first_bad.clone()
        loss_was_finite = None
        if weights is not None:
            finite = torch.stack([torch.isfinite(w).all() for w in weights]).all()
            loss_was_finite = flag < 0
            flag = torch.where((flag < 0) & ~finite, torch.full_like(flag, done - 1), flag)
        if self.world > 1:
            flag = torch.where(flag < 0, torch.full_like(flag, torch.iinfo(torch.long).max), flag)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            flag = torch.where(flag == torch.iinfo(torch.long).max, torch.full_like(flag, -1), flag)
        bad = int(flag)
        if bad < 0:
            return
        schedule = getattr(self.head, "lambda_schedule", None)  # read lambda without moving the head
        values = f"lambda {schedule(bad):.6g}" if schedule is not None else ""
        if self.last_checkpoint is None:
            last = "no checkpoint was written"
        else:  # training is deterministic: resuming any earlier checkpoint with this config diverges again
            last = (f"{ckpt_path} holds the finite weights of iteration {self.last_checkpoint}, but resuming it "
                    "with this configuration repeats the divergence")
        what = "non-finite weights by" if loss_was_finite is not None and bool(loss_was_finite) else "non-finite loss at"
        raise TrainingDiverged(
            f"training diverged: {what} iteration {bad} "
            f"(learning rate {learning_rate(self.config, bad):.6g}{', ' + values if values else ''}); "
            f"the weights were not saved; {last}. Lower optim.lr (or check the data) and start over with "
            "--no-resume (train(config, resume=False)) or a new run.out_dir: resume refuses a changed configuration")


__all__ = [
    "BatchLoader", "MetricsLog", "RunDirBusy", "RunFileError", "TrainResult", "TrainStep", "TrainingDiverged",
    "augment", "build_head", "build_model", "build_sampler", "flip_mask", "learning_rate", "load_checkpoint",
    "local_batch_size", "make_optimizer", "param_groups", "read_checkpoint", "resolve_device", "run_lock", "train",
]
