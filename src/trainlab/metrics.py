"""Metrics computed with torch: accuracy, top-k, confusion matrix, per-class precision/recall/F1."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts; row = true class, column = predicted class."""
    idx = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def precision_recall_f1(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class precision, recall, F1 and support from a confusion matrix; 0 where undefined (0/0)."""
    cm = cm.double()
    tp = cm.diag()
    predicted = cm.sum(0)  # tp + fp
    support = cm.sum(1)  # tp + fn
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return precision, recall, f1, support


def top_k_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(1).double().mean().item()


@dataclass
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvalReport:
    """Everything `trainlab evaluate` shows, as plain data."""

    split: str
    n: int
    loss: float
    accuracy: float
    top_k: dict[int, float]
    classes: list[str]
    per_class: list[ClassMetrics]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: list[list[int]]
    most_confused: list[dict] = field(default_factory=list)

    @property
    def acc(self) -> float:
        return self.accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["top_k"] = {str(k): v for k, v in self.top_k.items()}
        return d

    def text(self) -> str:
        """A classification report and confusion table for a terminal."""
        w = max(12, max(len(c) for c in self.classes) + 2)
        topk = "  ".join(f"top-{k} {v:.4f}" for k, v in self.top_k.items())
        out = [f"{self.split}: {self.n} examples - loss {self.loss:.4f} - accuracy {self.accuracy:.4f}  {topk}", "",
               f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
        for c in self.per_class:
            out.append(f"{c.name:<{w}}{c.precision:>10.4f}{c.recall:>10.4f}{c.f1:>10.4f}{c.support:>10d}")
        for label, avg in (("macro avg", self.macro), ("weighted avg", self.weighted)):
            out.append(f"{label:<{w}}{avg['precision']:>10.4f}{avg['recall']:>10.4f}{avg['f1']:>10.4f}{self.n:>10d}")
        short = [c[:6] for c in self.classes]
        cw = max(6, max(len(str(v)) for row in self.confusion for v in row)) + 1
        out += ["", "confusion matrix (rows: true, columns: predicted)",
                " " * w + "".join(f"{s:>{cw}}" for s in short)]
        for name, row in zip(self.classes, self.confusion):
            out.append(f"{name:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
        if self.most_confused:
            out += ["", "most confused (true -> predicted: count)"]
            out += [f"  {m['true']} -> {m['predicted']}: {m['count']}" for m in self.most_confused]
        return "\n".join(out)


def classification_report(logits: torch.Tensor, y: torch.Tensor, classes: list[str], split: str = "test",
                          ks: tuple[int, ...] = (1, 3, 5), most_confused: int = 5) -> EvalReport:
    """The full report from a split's logits (N, K) and labels (N,)."""
    logits, y = logits.float().cpu(), y.long().cpu()
    k = len(classes)
    pred = logits.argmax(1)
    cm = confusion_matrix(y, pred, k)
    p, r, f1, support = precision_recall_f1(cm)
    total = support.sum().clamp(min=1)
    per_class = [ClassMetrics(classes[i], p[i].item(), r[i].item(), f1[i].item(), int(support[i].item())) for i in range(k)]
    macro = {"precision": p.mean().item(), "recall": r.mean().item(), "f1": f1.mean().item()}
    weighted = {"precision": (p * support).sum().item() / total.item(), "recall": (r * support).sum().item() / total.item(),
                "f1": (f1 * support).sum().item() / total.item()}
    off = cm.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().sort(descending=True)
    pairs = [{"true": classes[int(i) // k], "predicted": classes[int(i) % k], "count": int(c)}
             for c, i in zip(counts[:most_confused], flat[:most_confused]) if c > 0]
    return EvalReport(split=split, n=len(y), loss=F.cross_entropy(logits, y).item(),
                      accuracy=(pred == y).double().mean().item(),
                      top_k={kk: top_k_accuracy(logits, y, kk) for kk in ks if kk <= k},
                      classes=list(classes), per_class=per_class, macro=macro, weighted=weighted,
                      confusion=cm.tolist(), most_confused=pairs)
