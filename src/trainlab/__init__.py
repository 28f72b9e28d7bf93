"""trainlab: train, watch, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.

    import trainlab
    run = trainlab.train("mnist-mlp", epochs=3, optimizer__lr=0.002)
    run.history, run.evaluate(), run.predict(images)
"""

__version__ = "0.1.0"

# Imported eagerly on purpose: binding `train` after the `trainlab.train` submodule has loaded keeps
# `trainlab.train` the function. A lazy export would be shadowed by the submodule on first import.
from trainlab.callbacks import Callback  # noqa: E402
from trainlab.data import Dataset, load_dataset, load_image_tree  # noqa: E402
from trainlab.errors import TrainlabError  # noqa: E402
from trainlab.metrics import EvalReport  # noqa: E402
from trainlab.plots import plot_history  # noqa: E402
from trainlab.recipes import Recipe, load_recipe, preset_names  # noqa: E402
from trainlab.predict import Predictions  # noqa: E402
from trainlab.runs import Run, load_run  # noqa: E402
from trainlab.train import train  # noqa: E402

__all__ = ["Callback", "Dataset", "EvalReport", "Predictions", "plot_history", "Recipe", "Run", "TrainlabError", "load_dataset",
           "load_image_tree", "load_recipe", "load_run", "preset_names", "train", "__version__"]
