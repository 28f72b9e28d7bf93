"""The idiomatic PyTorch peer: Dataset + DataLoader + the loop pytorch/examples writes.

    python torch_peer.py RECIPE.json DATA.npz SEED
Prints one JSON line like keras_peer.py. The model is trainlab's build_model (same layers, same
Keras initialisation) so that only the training loop differs; everything else is what a tutorial
writes: per-sample __getitem__ with a ToTensor-like transform, default collate, shuffle=True,
num_workers=0, torch.optim defaults (RMSprop is trainlab's Keras-exact one: torch's puts eps
outside the square root and would not reach the same accuracy), no channels_last, no fused steps.
"""

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from trainlab.models import build_model
from trainlab.optim import KerasRMSprop
from trainlab.recipes import Recipe


class ArrayImages(Dataset):
    def __init__(self, x, y, mean, std, normalize, flatten, augment=None):
        self.x, self.y, self.mean, self.std = x, y, mean, std
        self.normalize, self.flatten, self.augment = normalize, flatten, augment or {}

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = torch.from_numpy(self.x[i]).permute(2, 0, 1).float()  # H, W, C uint8 -> C, H, W float
        if self.normalize == "scale":
            img = img / 255.0
        elif self.normalize == "standardize":
            img = (img / 255.0 - self.mean[:, None, None]) / self.std[:, None, None]
        pad = self.augment.get("crop") or self.augment.get("translate")
        if pad:  # RandomCrop(padding=pad)
            img = F.pad(img[None], (pad,) * 4, mode="reflect" if self.augment.get("crop") else "constant")[0]
            top, left = np.random.randint(0, 2 * pad + 1, 2)
            img = img[:, top:top + self.x.shape[1], left:left + self.x.shape[2]]
        if self.augment.get("flip") and np.random.rand() < 0.5:  # RandomHorizontalFlip
            img = img.flip(2)
        if self.flatten:
            img = img.reshape(-1)
        return img, int(self.y[i])


def main() -> None:
    r = Recipe.model_validate(json.load(open(sys.argv[1])))
    data = np.load(sys.argv[2])
    seed = int(sys.argv[3])
    torch.manual_seed(seed)
    np.random.seed(seed)
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    d = r.data
    n_fit = len(x_train) if not isinstance(d.validation, float) else int(len(x_train) * (1 - d.validation))
    c = x_train.shape[-1]
    mean = torch.tensor(x_train[:n_fit].reshape(-1, c).mean(0) / 255.0, dtype=torch.float32)
    std = torch.tensor(x_train[:n_fit].reshape(-1, c).std(0) / 255.0, dtype=torch.float32)
    mk = lambda x, y, aug=None: ArrayImages(x, y, mean, std, d.normalize, d.flatten, aug)  # noqa: E731
    train_loader = DataLoader(mk(x_train[:n_fit], y_train[:n_fit], r.augment.model_dump()), batch_size=r.batch_size, shuffle=True)
    val = None
    if isinstance(d.validation, float):
        val = DataLoader(mk(x_train[n_fit:], y_train[n_fit:]), batch_size=1000)
    test_loader = DataLoader(mk(x_test, y_test), batch_size=1000)
    if d.validation == "test":
        val = test_loader
    shape = (x_train.shape[1] * x_train.shape[2] * c,) if d.flatten else (c, x_train.shape[1], x_train.shape[2])
    model, _ = build_model(r.model, shape, 10)
    o = r.optimizer
    if o.name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    elif o.name == "rmsprop":
        opt = KerasRMSprop(model.parameters(), lr=o.lr, rho=o.rho, eps=o.eps, momentum=o.momentum, weight_decay=o.weight_decay)
    elif o.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    sched = None
    if r.schedule.name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.schedule.max_lr or o.lr, total_steps=r.epochs * len(train_loader),
                                                    pct_start=r.schedule.pct_start, div_factor=r.schedule.div_factor,
                                                    final_div_factor=r.schedule.final_div_factor, cycle_momentum=False)

    def test(loader):
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for x, y in loader:
                out = model(x)
                if r.tta == "flip" and x.ndim == 4:
                    out = 0.5 * (out + model(x.flip(3)))
                loss += F.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
        return loss / len(loader.dataset), correct / len(loader.dataset)

    t0 = time.perf_counter()
    for epoch in range(r.epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y, label_smoothing=r.loss.label_smoothing)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        if val is not None:
            test(val)
    train_seconds = time.perf_counter() - t0
    _, acc = test(test_loader)
    print(json.dumps({"train_seconds": train_seconds, "test_acc": acc, "n_train": n_fit, "epochs": r.epochs,
                      "versions": f"torch {torch.__version__}"}))


if __name__ == "__main__":
    main()
