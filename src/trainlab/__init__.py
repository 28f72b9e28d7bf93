"""trainlab: train, watch, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.

    import trainlab
    run = trainlab.train("mnist-mlp", epochs=3, optimizer__lr=0.002)
    run.history, run.evaluate(), run.predict(images)
"""

from trainlab.version import __version__  # noqa: E402,F401

# Imported eagerly on purpose: binding `train` after the `trainlab.train` submodule has loaded keeps
# `trainlab.train` the function. matplotlib and SQLAlchemy load only when a picture or the run index is used.
from trainlab.callbacks import Callback  # noqa: E402
from trainlab.data import load_dataset  # noqa: E402
from trainlab.errors import TrainlabError  # noqa: E402
from trainlab.inference import Predictions  # noqa: E402
from trainlab.metrics import EvalReport  # noqa: E402
from trainlab.plots import plot_history  # noqa: E402
from trainlab.readers import Dataset  # noqa: E402
from trainlab.recipes import Recipe, load_recipe, preset_names  # noqa: E402
from trainlab.runs import Run, load_run  # noqa: E402
from trainlab.settings import Settings, load_settings  # noqa: E402
from trainlab.trees import load_image_tree  # noqa: E402
from trainlab.train import train  # noqa: E402

__all__ = ["Callback", "Dataset", "EvalReport", "Predictions", "plot_history", "Recipe", "Run", "Settings", "TrainlabError",
           "load_dataset", "load_image_tree", "load_recipe", "load_run", "load_settings", "preset_names", "train",
           "__version__"]
