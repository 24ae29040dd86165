"""Classification metrics from a confusion matrix, and its plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["EvalResult", "confusion_update", "result_from_counts", "plot_confusion"]


@dataclass
class EvalResult:
    """Top-1/top-5 accuracy (%), mean loss, per-class accuracy (%) and the confusion matrix
    (rows: true class, columns: predicted)."""

    loss: float
    top1: float
    top5: float
    samples: int
    per_class: list[float] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)

    def to_dict(self, with_confusion: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_confusion:
            d.pop("confusion")
        return d


def confusion_update(confusion: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, int]:
    """Add a batch to ``confusion`` (``int64 (K, K)``); returns it and the top-5 hit count."""
    k = confusion.shape[0]
    pred = logits.argmax(1)
    confusion += torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    top = min(5, logits.shape[1])
    hits = (logits.topk(top, dim=1).indices == labels[:, None]).any(1).sum()
    return confusion, int(hits)


def result_from_counts(confusion: torch.Tensor, loss_sum: float, top5_hits: int) -> EvalResult:
    n = int(confusion.sum())
    correct = int(confusion.diag().sum())
    per_class_n = confusion.sum(1).clamp_min(1)
    per_class = (100.0 * confusion.diag() / per_class_n).tolist()
    return EvalResult(
        loss=loss_sum / max(n, 1),
        top1=100.0 * correct / max(n, 1),
        top5=100.0 * top5_hits / max(n, 1),
        samples=n,
        per_class=[round(v, 3) for v in per_class],
        confusion=confusion.tolist(),
    )


def plot_confusion(confusion: list[list[int]], class_names: list[str] | None,
                   path: str | Path, title: str = "confusion matrix") -> Path:
    """Save the confusion matrix as a PNG (row-normalized colours, raw counts written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimkit.train.checkpoint import atomic_write_bytes

    cm = torch.tensor(confusion, dtype=torch.float64)
    k = cm.shape[0]
    names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
    norm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
