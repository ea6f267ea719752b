"""The training loop: packed dataset -> backbone + head -> checkpoints and a metrics log.

One code path for one process and for ``torchrun`` data parallelism (DistributedDataParallel over
backbone and head together; each rank takes its contiguous slice of the sampler's global batch).
The recipe is the paper's (Section 4.1) and the official solver's: SGD with momentum, step decay of the
learning rate, the head's lambda stepped every iteration, horizontal flip, (x - 127.5) / 128.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..backbones import create_backbone
from ..data.packed import PackedDataset, atomic_write_text
from ..data.sources import open_packed
from ..data.samplers import create_sampler
from ..losses import Head, LambdaSchedule, create_head
from .config import ConfigError, TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_FORMAT = 1
_FLIP_STREAM = 0x666C6970  # separates the flip random stream from the sampler's


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped without checkpointing the broken weights."""


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
    """The configured head; a ``lambda_schedule`` mapping becomes a :class:`LambdaSchedule`."""
    kwargs = dict(config.head.kwargs)
    if isinstance(kwargs.get("lambda_schedule"), dict):
        try:
            kwargs["lambda_schedule"] = LambdaSchedule(**kwargs["lambda_schedule"])
        except TypeError as exc:
            raise ConfigError(f"head.kwargs.lambda_schedule: {exc}") from None
    try:
        return create_head(config.head.name, config.model.feat_dim, num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"head.kwargs do not fit head {config.head.name!r}: {exc}") from None


def build_model(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, Head]:
    """(backbone, head) for images of shape (H, W, C) and ``num_classes`` identities, seeded by run.seed."""
    torch.manual_seed(config.run.seed)
    h, w, c = image_shape
    backbone = create_backbone(
        config.model.backbone, in_channels=c, input_size=(h, w), width=config.model.width,
        feat_dim=config.model.feat_dim)
    return backbone, build_head(config, num_classes)


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
    when the training device is a GPU, ``prefetch`` batches ahead.
    """

    def __init__(
        self, dataset: PackedDataset, config: TrainConfig, start: int, stop: int,
        rank: int = 0, world_size: int = 1, pin: bool = False,
    ) -> None:
        b = config.optim.batch_size
        if b % world_size:
            raise ConfigError(f"optim.batch_size {b} must be divisible by the number of processes {world_size}")
        self.dataset, self.start, self.stop, self.pin = dataset, start, stop, pin
        self.global_batch, self.local_batch = b, b // world_size
        self.lo = rank * self.local_batch
        self.seed, self.flip = config.run.seed, config.data.flip
        self.sampler = create_sampler(
            config.data.sampler, dataset.labels, b, config.run.seed, **config.data.sampler_kwargs)
        self._queue: queue.Queue = queue.Queue(maxsize=config.data.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="BatchLoader")
        self._thread.start()

    def batch(self, iteration: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """This rank's (images, labels, flip) of ``iteration``."""
        rows = self.sampler.indices(iteration)[self.lo:self.lo + self.local_batch]
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
        with autocast:
            loss, logits = self.module(x, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.detach() if logits is not None else None), y


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], TrainConfig]:
    """The state dict of a checkpoint file (tensors only, on the CPU) and the config stored in it."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, this library reads {CHECKPOINT_FORMAT}")
    return state, TrainConfig.from_dict(state["config"], source=f"{path} (stored config)")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainResult:
    """Rebuild backbone and head (eval mode) from a checkpoint or a run folder holding ``checkpoint.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state, config = _read_checkpoint(path)
    ds = state["dataset"]
    backbone, head = build_model(config, (ds["height"], ds["width"], ds["channels"]), ds["num_identities"])
    backbone.load_state_dict(state["backbone"])
    head.load_state_dict(state["head"])
    device = torch.device(device)
    metrics_path = path.parent / METRICS_NAME
    metrics = _read_metrics(metrics_path, state["iteration"])
    return TrainResult(backbone.to(device).eval(), head.to(device).eval(), config, metrics,
                       int(state["iteration"]), path, device)


def _read_metrics(path: Path, up_to: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["iteration"] <= up_to]


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


def train(config: TrainConfig, *, resume: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``config``; returns the final model and its metrics log.

    Writes ``run.out_dir/checkpoint.pt`` every ``run.checkpoint_every`` iterations and at the end, and
    ``run.out_dir/metrics.jsonl`` every ``run.log_every`` iterations. Raises :class:`TrainingDiverged`
    when the loss becomes NaN or infinite.
    """
    rank, world, local_rank, created_group = _distributed()
    device = resolve_device(config.run.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    try:
        return _train(config, resume, device, rank, world)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, resume: bool, device: torch.device, rank: int, world: int) -> TrainResult:
    dataset = open_packed(config.data.path)
    manifest = dataset.manifest
    out = Path(config.run.out_dir)
    ckpt_path, metrics_path = out / CHECKPOINT_NAME, out / METRICS_NAME
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"training config (rank 0 of {world}, device {device}):\n{config.to_yaml()}", flush=True)

    backbone, head = build_model(config, manifest.image_shape, manifest.num_identities)
    optimizer = make_optimizer(backbone, head, config)
    start = 0
    if resume and ckpt_path.is_file():
        state, stored = _read_checkpoint(ckpt_path)
        if _math_fields(stored) != _math_fields(config):
            raise ConfigError(
                f"{ckpt_path} was written by a different configuration; use another run.out_dir "
                "or train(config, resume=False) to start over")
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
        start = int(state["iteration"])
        torch.set_rng_state(state["rng_cpu"])
    step = TrainStep(backbone, head, optimizer, config, device, world)
    if start:  # after .to(device): optimizer state must follow the parameters
        optimizer.load_state_dict(state["optimizer"])
        if device.type == "cuda" and len(state["rng_cuda"]):
            torch.cuda.set_rng_state(state["rng_cuda"], device)
    metrics: list[dict[str, Any]] = []  # the log is kept by rank 0
    if rank == 0:  # drop rows a killed run logged after its last checkpoint
        metrics = _read_metrics(metrics_path, start) if start else []
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in metrics))

    iterations = config.optim.iterations
    guard = _Guard(config, head, device, world)
    guard.last_checkpoint = start or None
    loader = BatchLoader(dataset, config, start, iterations, rank, world, pin=device.type == "cuda")
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
                    metrics.append(row)
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    if bar is not None:
                        bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                         for k, v in row.items() if k not in ("iteration", "lr")})
            if done % config.run.checkpoint_every == 0 or done == iterations:
                guard.check(done, ckpt_path, weights=list(backbone.parameters()) + list(head.parameters()))
                if rank == 0:
                    _atomic_torch_save(_checkpoint_state(config, manifest, done, backbone, head, optimizer), ckpt_path)
                guard.last_checkpoint = done
    finally:
        loader.close()
        if bar is not None:
            bar.close()
    return TrainResult(backbone.eval(), head.eval(), config, metrics, max(start, iterations), ckpt_path, device)


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
        last = (f"the last good checkpoint is {ckpt_path} (iteration {self.last_checkpoint})"
                if self.last_checkpoint is not None else "no checkpoint was written")
        what = "non-finite weights by" if loss_was_finite is not None and bool(loss_was_finite) else "non-finite loss at"
        raise TrainingDiverged(
            f"training diverged: {what} iteration {bad} "
            f"(learning rate {learning_rate(self.config, bad):.6g}{', ' + values if values else ''}); "
            f"the weights were not saved; {last}. Lower optim.lr or check the data.")


__all__ = [
    "BatchLoader", "TrainResult", "TrainStep", "TrainingDiverged", "augment", "build_head", "build_model",
    "flip_mask", "learning_rate", "load_checkpoint", "make_optimizer", "param_groups", "resolve_device", "train",
]
