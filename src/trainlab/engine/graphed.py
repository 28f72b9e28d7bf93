"""The captured training step on CUDA: the whole step recorded once as a CUDA graph and replayed.

Why: on a GPU a small model's step is the cost of launching dozens of tiny kernels from Python,
not their arithmetic. Measured on one H200 (issue #35): the seed MLP's step is 1.44 ms in eager
PyTorch, 0.150 ms captured once and replayed with the data already on the device.

Inside the graph: the batch gather from the uint8 training split on the device, its preparation
and augmentation (a function of the epoch's draws, data/augment.py), forward (under autocast in
bf16-mixed), loss, backward, the optimizer step (built capturable: its step count and learning
rate are device tensors), the LR schedule (a table of the run's coming learning rates read at a
device step counter, when the schedule is a function of the step alone), and the epoch's running
sums. Per step the host copies the batch's positions and draws into the graph's input buffers (two
device-to-device copies) and replays it: no host sync; the loop syncs only to report (~10 a second).

Warm-up and capture: each batch size runs eagerly for `warmup` steps (real updates, on the same
side stream the capture uses, as torch's documentation asks), is captured on the next and replayed
from then on. The last, shorter batch of an epoch gets a graph of its own after its own warm-up,
so it is trained, never dropped. Every step, eager or replayed, runs the same operations on the
same buffers, so a run's trajectory does not depend on when the capture happened; the body is
also run eagerly on the CPU by tests/test_graphed.py against the autograd step.

What a graph changes about exactness: nothing within a run on one machine (replay runs the
captured kernels; cuDNN's algorithm choice is fixed at capture, autotuning stays off). A resumed
run continues the same trajectory: the checkpoint holds torch's usual optimizer state (the
learning rate as a number), the epoch's order and draws, and CUDA's generator (which a replay
advances as the eager step would); the resumed process captures its graphs afresh. Loading an
optimizer state drops the graphs (they hold the old state tensors' addresses) and they are
captured again.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.engine.precision import train_autocast
from trainlab.engine.step import BatchStep, Feed


class GraphedStep(BatchStep):
    """The autograd step's arithmetic, captured per batch size and replayed (see the module's docstring)."""

    kind = "cuda-graph"

    def __init__(self, forward: nn.Module, optimizer: torch.optim.Optimizer, label_smoothing: float,
                 device: torch.device, precision: str = "fp32", scheduler=None, feed: Feed | None = None,
                 lr_table: bool = True, warmup: int = 3, capture: bool = True):
        super().__init__(optimizer, scheduler, feed)
        self.forward, self.smoothing, self.device, self.precision = forward, label_smoothing, device, precision
        self.warmup, self.capture = warmup, capture and device.type == "cuda"
        self.use_table = lr_table and scheduler is not None  # a schedule of the step alone: inside the graph
        self.graphs: dict[int, tuple] = {}  # batch size -> (graph, its loss output)
        self.inputs: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}  # batch size -> (positions, draws) buffers
        self.seen: Counter = Counter()
        self.table: torch.Tensor | None = None
        self.rates: list[float] = []  # the table on the host; the host scheduler is at rates[self.host_at]
        self.host_at = 0
        self.counter = torch.zeros((), dtype=torch.long, device=device)  # steps since the table was made
        self.pending = 0  # scheduler steps the graph has taken and the host scheduler not yet
        self.stream = torch.cuda.Stream(device) if self.capture else None
        tensor_learning_rates(optimizer, device)
        optimizer.register_state_dict_post_hook(lambda opt, sd: _plain_learning_rates(sd))
        optimizer.register_load_state_dict_post_hook(lambda opt: self._reloaded())

    # -- the body: what is captured --------------------------------------------------------------

    def body(self, idx: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        """One whole step on the rows `idx`: everything from gather to running sums, device work only."""
        x, y = self.feed.batch(idx, draws)
        with train_autocast(self.device, self.precision, cache=False):  # autocast's weight cache cannot live in a graph
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.smoothing)
        loss.backward()
        self.optimizer.step()
        if self.table is not None:  # the next step's learning rate, read from the table at the device counter
            self.counter.add_(1)
            at = torch.clamp(self.counter, max=len(self.table) - 1).view(1)
            self.optimizer.param_groups[0]["lr"].copy_(self.table.index_select(0, at).view(()))
        loss = loss.detach()
        self.feed.count(logits.detach(), y, loss)
        return loss

    # -- the host side ---------------------------------------------------------------------------

    def __call__(self, idx: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_table and self.table is None:
            self._make_table()
        n = len(idx)
        pos, drawn = self._buffers(n, draws)
        pos.copy_(idx)
        if drawn is not None:
            drawn.copy_(draws)
        if n in self.graphs:
            graph, loss = self.graphs[n]
            graph.replay()
        elif self.capture and self.seen[n] >= self.warmup:
            loss = self._capture(n, pos, drawn)
        else:
            loss = self._eager(pos, drawn)
        self.seen[n] += 1
        self._after_step()
        return loss

    def _buffers(self, n: int, draws: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if n not in self.inputs:
            pos = torch.zeros(n, dtype=torch.long, device=self.device)
            drawn = None if draws is None else torch.zeros((n, draws.shape[1]), dtype=draws.dtype, device=self.device)
            self.inputs[n] = (pos, drawn)
        return self.inputs[n]

    def _side(self):
        """The side stream eager steps and captures run on (CUDA), joined to the current stream around it."""
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self.stream)

    def _join(self) -> None:
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def _eager(self, pos: torch.Tensor, drawn: torch.Tensor | None) -> torch.Tensor:
        with self._side():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.body(pos, drawn)
        self._join()
        return loss

    def _capture(self, n: int, pos: torch.Tensor, drawn: torch.Tensor | None) -> torch.Tensor:
        """Record the step for batch size n (capturing runs nothing), then replay it once for this batch."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # backward allocates the gradients from the graph's pool
        with torch.cuda.graph(graph, stream=self.stream):
            loss = self.body(pos, drawn)
        self.graphs[n] = (graph, loss)
        graph.replay()
        return loss

    def _after_step(self) -> None:
        if self.scheduler is None:
            return
        if self.table is not None:
            self.pending += 1  # the graph moved the learning rate; the host scheduler catches up in sync()
        else:
            self.scheduler.step()  # writes the device learning rate in place (one fill, no sync)

    def _make_table(self) -> None:
        """The learning rates of the coming steps, by stepping the host scheduler ahead and back."""
        groups = self.optimizer.param_groups
        lr_tensor = groups[0]["lr"]
        saved = self.scheduler.state_dict()
        for g in groups:
            g["lr"] = float(g["lr"])
        rates = [groups[0]["lr"]]
        total = getattr(self.scheduler, "total_steps", None)
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": a dry run, put back below
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(max(0, (total or 10**7) - self.scheduler.last_epoch)):
                try:
                    self.scheduler.step()
                except ValueError:  # OneCycleLR past its last step
                    break
                rates.append(groups[0]["lr"])
                if total is None and len(rates) > 10**6:
                    break
        self.scheduler.load_state_dict(saved)
        for g in groups:
            g["lr"] = lr_tensor
        lr_tensor.fill_(rates[0])
        self.table = torch.tensor(rates, dtype=lr_tensor.dtype, device=self.device)
        self.rates, self.host_at = rates, 0
        self.counter.zero_()

    def sync(self) -> None:
        """Step the host scheduler over the steps the graph has taken, without touching the device."""
        if not self.pending:
            return
        groups = self.optimizer.param_groups
        tensors = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = self.rates[min(self.host_at, len(self.rates) - 1)]  # a number while the host scheduler replays its steps
        for _ in range(self.pending):
            self.scheduler.step()
        for g, t in zip(groups, tensors):
            g["lr"] = t
        self.host_at += self.pending
        self.pending = 0

    def _reloaded(self) -> None:
        """The optimizer's state was loaded (resume): new state tensors, so new graphs, and the learning
        rate back as a device tensor."""
        tensor_learning_rates(self.optimizer, self.device)
        self.graphs.clear()
        self.seen.clear()
        self.table, self.pending, self.rates, self.host_at = None, 0, [], 0


def tensor_learning_rates(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each group's learning rate as a device tensor, which a captured graph reads at replay."""
    for g in optimizer.param_groups:
        if not isinstance(g["lr"], torch.Tensor) or g["lr"].device != device:
            g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)


def _plain_learning_rates(sd: dict) -> dict:
    """A state_dict with its learning rates as numbers, as every other step saves them."""
    for g in sd["param_groups"]:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if isinstance(g.get(key), torch.Tensor):
                g[key] = float(g[key])
    return sd
