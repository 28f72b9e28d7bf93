"""The training engine: the loop and everything it calls, with no knowledge of run folders.

- `loop`: `fit` (epochs, validation, callbacks) and `train_epoch` (batches sliced from device tensors).
- `step`: the `Step` protocol and `AutogradStep`; `fused`: the hand-derived step for dense stacks.
- `state`: `TrainState` (what the loop works on, all a checkpoint needs) and the data on the device.
- `callbacks`: the hooks, early stopping, reduce-LR-on-plateau and the CPU watch.
- `progress`: the terminal and notebook progress displays.
- `checkpoint`: what a checkpoint holds, writing it, putting the loop back (exact resume).
- `distributed`: several processes with DistributedDataParallel.
"""

from trainlab.lazy import lazy_exports

_EXPORTS = {"AutogradStep": "trainlab.engine.step", "Callback": "trainlab.engine.callbacks", "Step": "trainlab.engine.step", "TrainState": "trainlab.engine.state", "fit": "trainlab.engine.loop"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
