"""Training on several processes with DistributedDataParallel (`torchrun ... -m trainlab train`):
gloo on the CPU, nccl on CUDA.

The recipe's batch size and learning rate stay the global ones: every rank draws the same shuffled
order of each epoch (the same seeded generator, re-synchronised from rank 0 at each epoch start),
takes its own disjoint slice of every global batch (`batch[rank::world]`), and DDP averages the
gradients, so one step sees the same examples as one step of a single process. The running loss and
accuracy sums are all-reduced at fixed steps (the same on every rank: a collective must be), which
is also where a stop request on any rank becomes a stop on all. Batch norm is synchronised on CUDA
(SyncBatchNorm); on the CPU torch's SyncBatchNorm does not run, so each rank normalises over its own
slice and rank 0's running statistics are broadcast each step (DDP's broadcast_buffers). Only rank 0
writes the run, its events and checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from trainlab.errors import TrainlabError
from trainlab.settings import Settings

REPORT_STEPS = 20  # steps between the collective that sums the running metrics and checks for a stop


@dataclass
class Group:
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint slice of a global batch's indices."""
        return idx[self.rank::self.world]

    def report_now(self, step: int, last: int) -> bool:
        return step % REPORT_STEPS == REPORT_STEPS - 1 or step == last

    def sum_(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


    def sync_generator(self, gen: torch.Generator) -> None:
        """Every rank continues from rank 0's generator state (shards of uneven size drew differently)."""
        state = gen.get_state()
        dist.broadcast(state, src=0)
        gen.set_state(state)

    def broadcast(self, value):
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(settings: Settings, device: torch.device) -> Group | None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); None for one process."""
    if settings.world_size <= 1:
        return None
    if not dist.is_available():
        raise TrainlabError("this torch build has no torch.distributed; train with one process")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(settings.local_rank)
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as exc:
            raise TrainlabError(f"cannot join the training group ({str(exc).splitlines()[0]}); start with torchrun "
                                f"(or trainlab train --nproc N)") from None
    return Group(dist.get_rank(), dist.get_world_size())


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The DDP wrapper the loop runs forward and backward through (the plain module is what is saved)."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def local_device(device: torch.device, settings: Settings) -> torch.device:
    """Each rank's GPU is its local rank's."""
    return torch.device("cuda", settings.local_rank) if device.type == "cuda" and settings.world_size > 1 else device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
