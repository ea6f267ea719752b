"""The metric-learning rows of the paper's comparison (SphereFace Tables 4-5): losses on pairs, triplets
and class centers.

* :class:`SoftmaxContrastive` softmax + contrastive loss on all pairs of the batch (DeepID2, Sun et al.,
                              NIPS 2014, Eq. 1-2)
* :class:`Triplet`            triplet loss on L2-normalized embeddings with online semi-hard negatives
                              (FaceNet, Schroff et al., CVPR 2015, Eq. 1-3 and Section 3.2)
* :class:`SoftmaxCenter`      softmax + center loss with centers updated at their own rate alpha
                              (Wen et al., ECCV 2016, Eq. 2-5 and Algorithm 1)

What a batch must contain: the pair and triplet losses are computed within the batch, so they need several
images per identity there: sample with the ``"pk"`` sampler (P identities x K images, see
:mod:`sphereface_lib.data.samplers`). Under torch.distributed (``torchrun``) a training-mode head first gathers
the embeddings and labels of every rank (:func:`gather_batch`), so that the pairs and triplets, the loss and,
after DistributedDataParallel's gradient averaging, the gradients are those of the whole global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .angular import Softmax
from .base import Head, check_inputs, compute_dtype, float32_autocast_off, register_head


def pairwise_squared_distances(x: Tensor) -> Tensor:
    """||x_i - x_j||^2 for all pairs of rows, clamped at 0 (the expansion can round below 0)."""
    sq = (x * x).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)


def gather_batch(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's ``features`` and ``labels``, concatenated in rank order, under an initialized process group
    of more than one rank; the inputs unchanged otherwise.

    All ranks must call it with slices of one size (the trainer's equal slices of the global batch). The
    features keep their graph (``torch.distributed.nn.functional.all_gather``): each rank computes the same
    global loss and its backward sums the ranks' gradients into each slice, which DDP's averaging over the
    ranks turns into exactly the gradient of the loss on the whole batch in one process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    from torch.distributed.nn.functional import all_gather

    gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, labels.contiguous())
    return torch.cat(all_gather(features), dim=0), torch.cat(gathered)


def _last_values(values: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


@register_head("softmax_contrastive")
class SoftmaxContrastive(Softmax):
    """Softmax cross-entropy + lambda_ x contrastive loss on every pair of the batch (DeepID2 Eq. 1-2).

    Pair (i, j), d = ||x_i - x_j|| on the raw (un-normalized) features: d^2 / 2 when both images show
    one identity, max(0, m - d)^2 / 2 otherwise. The contrastive term is the mean over all unordered
    pairs i < j of the batch; a batch of one image has no pair and the term is 0. A batch without
    positive pairs only pushes negatives apart: use the ``"pk"`` sampler so that every batch has positives.
    DeepID2 learns m; here it is fixed. Defaults: lambda_ = 0.05 (DeepID2, Section 4.1), m = 1.
    """

    def __init__(self, feat_dim: int, num_classes: int, lambda_: float = 0.05, m: float = 1.0) -> None:
        super().__init__(feat_dim, num_classes)
        if lambda_ < 0 or not m > 0:
            raise ValueError(f"SoftmaxContrastive needs lambda_ >= 0 and margin m > 0, got lambda_={lambda_}, m={m}")
        self.lambda_, self.m = float(lambda_), float(m)
        self._last: dict[str, Tensor] = {}

    def contrastive(self, features: Tensor, labels: Tensor) -> Tensor:
        """Mean contrastive loss over the pairs i < j of the batch (DeepID2 Eq. 2); 0 without pairs."""
        n = features.shape[0]
        x = features.to(compute_dtype(features))
        if n < 2:
            return x.sum() * 0.0
        d2 = pairwise_squared_distances(x)
        # sqrt(max(d^2, tiny)): finite gradient for coinciding features (e.g. all-zero ones).
        d = torch.sqrt(d2.clamp_min(torch.finfo(d2.dtype).tiny))
        same = labels[:, None] == labels[None, :]
        per_pair = torch.where(same, 0.5 * d2, 0.5 * F.relu(self.m - d) ** 2)
        i, j = torch.triu_indices(n, n, offset=1, device=features.device)
        return per_pair[i, j].mean()

    def compute_loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy on this rank's slice + lambda_ x the contrastive loss of the global batch (training
        mode under torch.distributed, see :func:`gather_batch`) or of ``features``."""
        check_inputs(self, features, labels)
        logits = self(features)
        with float32_autocast_off(features):
            ce = F.cross_entropy(logits, labels)
            x = features.to(compute_dtype(features))
            pair_loss = self.contrastive(*(gather_batch(x, labels) if self.training else (x, labels)))
        self._last = {"softmax": ce.detach(), "contrastive": pair_loss.detach()}
        return ce + self.lambda_ * pair_loss, logits

    def log_values(self) -> dict[str, float]:
        return _last_values(self._last)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_={self.lambda_}, m={self.m}"


@register_head("triplet")
class Triplet(Head):
    """Triplet loss with online semi-hard negatives (FaceNet Eq. 1-3, Section 3.2); there are no logits.

    Embeddings are L2-normalized. Every anchor-positive pair (a, p), a != p of one identity, is used;
    its negative n is the closest one farther from a than p (semi-hard: d(a,p) < d(a,n)); when no negative
    is that far, the farthest negative (the rule of TensorFlow's ``triplet_semihard_loss``). The loss is
    the mean over the pairs of max(0, d(a,p) - d(a,n) + alpha) with squared distances d (FaceNet Eq. 1).
    ``forward`` returns this loss; ``num_classes`` only bounds the labels.

    A batch (the global batch under torch.distributed) must hold at least one identity twice and at least two
    identities (the ``"pk"`` sampler with K >= 2, P >= 2 does); any other raises ``ValueError`` on every rank
    rather than returning a silent 0.
    Listing the pairs (``nonzero``) is the one host synchronization per batch on a GPU.
    """

    def __init__(self, feat_dim: int, num_classes: int, alpha: float = 0.2) -> None:
        super().__init__(feat_dim, num_classes)
        if not alpha > 0:
            raise ValueError(f"Triplet margin alpha must be > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self._last: dict[str, Tensor] = {}

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """The triplet loss of the global batch (training mode under torch.distributed, see
        :func:`gather_batch`) or of ``features``."""
        check_inputs(self, features, labels)
        with float32_autocast_off(features):
            x = features.to(compute_dtype(features))
            if self.training:
                x, labels = gather_batch(x, labels)
            embeddings = F.normalize(x, dim=1)
            d2 = pairwise_squared_distances(embeddings)
            same = labels[:, None] == labels[None, :]
            positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
            negative = ~same
            positive &= negative.any(dim=1, keepdim=True)
            anchor, pos = positive.nonzero(as_tuple=True)
            if anchor.numel() == 0:
                raise ValueError(
                    f"Triplet: the batch of {len(labels)} has no (anchor, positive, negative) triplet; it needs "
                    "an identity seen at least twice and a second identity: use sampler 'pk' with k >= 2"
                )
            with torch.no_grad():
                d_ap, d_an = d2[anchor, pos], d2[anchor]
                farther = negative[anchor] & (d_an > d_ap[:, None])
                semi_hard = d_an.masked_fill(~farther, float("inf")).argmin(dim=1)
                farthest = d_an.masked_fill(~negative[anchor], float("-inf")).argmax(dim=1)
                neg = torch.where(farther.any(dim=1), semi_hard, farthest)
            per_triplet = F.relu(d2[anchor, pos] - d2[anchor, neg] + self.alpha)
            self._last = {"triplets": torch.tensor(float(anchor.numel())),
                          "active_fraction": (per_triplet > 0).float().mean().detach()}
            return per_triplet.mean()

    def compute_loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, None]:
        return self(features, labels), None

    def log_values(self) -> dict[str, float]:
        return _last_values(self._last)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"


@register_head("softmax_center")
class SoftmaxCenter(Softmax):
    """Softmax cross-entropy + lambda_ x center loss (Wen et al. Eq. 5), centers updated by Eq. 4.

    Center loss L_C = 1/(2M) sum_i ||x_i - c_{y_i}||^2 over the M images of the batch (Eq. 2, averaged
    as the official Caffe layer does). The centers are a buffer, not parameters: after each training-mode
    :meth:`compute_loss`, c_j <- c_j - alpha * sum_i [y_i = j](c_j - x_i) / (1 + sum_i [y_i = j])
    (Eq. 4, Algorithm 1). Under torch.distributed the sums are all-reduced, so every rank applies the
    update of the global batch. Defaults lambda_ = 0.003, alpha = 0.5 (Section 4.1).
    """

    def __init__(self, feat_dim: int, num_classes: int, lambda_: float = 0.003, alpha: float = 0.5) -> None:
        super().__init__(feat_dim, num_classes)
        if lambda_ < 0 or not 0 <= alpha <= 1:
            raise ValueError(f"SoftmaxCenter needs lambda_ >= 0 and alpha in [0, 1], got lambda_={lambda_}, alpha={alpha}")
        self.lambda_, self.alpha = float(lambda_), float(alpha)
        centers = torch.empty(num_classes, feat_dim)
        nn.init.xavier_uniform_(centers)  # the official prototxt's center_filler
        self.register_buffer("centers", centers)
        self._last: dict[str, Tensor] = {}

    def center_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """1/(2M) sum_i ||x_i - c_{y_i}||^2 (Eq. 2 over the batch); gradients reach the features only."""
        x = features.to(compute_dtype(features))
        return 0.5 * ((x - self.centers[labels].to(x.dtype)) ** 2).sum(dim=1).mean()

    @torch.no_grad()
    def update_centers(self, features: Tensor, labels: Tensor) -> None:
        """One step of Eq. 4 with rate alpha on this batch (the global batch under torch.distributed)."""
        x = features.to(self.centers.dtype)
        counts = x.new_zeros(self.num_classes).index_add_(0, labels, x.new_ones(len(labels)))  # no host sync
        sums = torch.zeros_like(self.centers).index_add_(0, labels, x)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        delta = (counts[:, None] * self.centers - sums) / (1.0 + counts[:, None])
        self.centers.sub_(self.alpha * delta)

    def compute_loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        check_inputs(self, features, labels)
        logits = self(features)
        with float32_autocast_off(features):
            ce = F.cross_entropy(logits, labels)
            center = self.center_loss(features, labels)
        if self.training:
            self.update_centers(features.detach(), labels)
        self._last = {"softmax": ce.detach(), "center": center.detach()}
        return ce + self.lambda_ * center, logits

    def log_values(self) -> dict[str, float]:
        return _last_values(self._last)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_={self.lambda_}, alpha={self.alpha}"
