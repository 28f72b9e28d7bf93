"""Writes the lesson notebooks (without outputs). Run from examples/: python make_notebooks.py; then execute
them (full size) with nbclient or Jupyter to fill in the outputs that are committed."""

import nbformat as nbf
from pathlib import Path

SETUP = '''%matplotlib inline
import os
import trainlab

# QUICK (set in CI): tiny subsets and one epoch, so the whole notebook runs in seconds.
QUICK = bool(os.environ.get("CI") or os.environ.get("QUICK"))
settings = trainlab.load_settings()  # TRAINLAB_DATA, TRAINLAB_RUNS, ... from the environment
print("quick run" if QUICK else "full-size run", "- data from", settings.data_dir or "the cache")'''


def nb(path, cells):
    book = nbf.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells = [nbf.v4.new_markdown_cell(c[1]) if c[0] == "md" else nbf.v4.new_code_cell(c[1]) for c in cells]
    nbf.write(book, path)


nb("fashion-mnist.ipynb", [
    ("md", "# Fashion-MNIST: basic image classification\n\nThe Keras *basic classification* lesson with trainlab: look at the data, build `Flatten → Dense 128 relu → Dense 10`, train with Adam for 5 epochs, evaluate, then predict and picture the predictions. The recipe is the preset `fashion-mlp` (`trainlab show fashion-mlp`)."),
    ("code", SETUP),
    ("md", "## The data\n\n60,000 training and 10,000 test images of 28×28 grey pixels, ten classes of clothing. The first 25 training images with their class names:"),
    ("code", 'trainlab.show_samples("fashion-mnist", n=25, settings=settings)'),
    ("md", "One image large, with its pixel values (0–255) as a colour bar. Training divides them by 255 (`data.normalize: scale`)."),
    ("code", 'trainlab.show_samples("fashion-mnist", index=0, settings=settings)'),
    ("md", "## The model"),
    ("code", 'recipe = trainlab.load_recipe("fashion-mlp")\nfrom trainlab.training import summarize\nprint(summarize(recipe, settings))'),
    ("md", "## Training\n\nIn a notebook the progress is a bar in the cell and the chart below it grows as training goes."),
    ("code", 'overrides = {"data.limit_train": 3000, "data.limit_test": 1000} if QUICK else {}\nrun = trainlab.train("fashion-mlp", epochs=1 if QUICK else 5, overrides=overrides, settings=settings)'),
    ("md", "## Learning curves\n\nTraining accuracy above validation accuracy is the first sign of over-fitting (the lesson trains 500 epochs to show it clearly: test loss rises while training accuracy reaches 0.995)."),
    ("code", 'trainlab.plot_history(run)'),
    ("md", "## Evaluation: loss, accuracy, precision and recall"),
    ("code", 'report = run.evaluate()\nprint(report.text())'),
    ("md", "## Prediction\n\nTest image 0 is an ankle boot (class 9). `predict` returns the ten class probabilities; the largest names the class."),
    ("code", 'x_test, y_test = run.split("test")\npred = run.predict(x_test[:1].permute(0, 2, 3, 1).numpy())\nprint(pred.class_names[0], pred.probs[0].round(3))'),
    ("md", "The lesson's picture: each test image with its predicted class and confidence (blue when right, red when wrong, the true class in brackets), beside its ten probabilities (the predicted bar red, the true bar blue)."),
    ("code", 'run.plot_predictions(range(15))'),
    ("md", "## Data health: which test labels are wrong?\n\nEvery image of the test set is scored by a model that never saw it (5-fold cross-fitting of the fast preset `fashion-fast`); confident learning (cleanlab) flags the labels those models find unlikely. `suspects(n)` lists the least likely labels, flagged or not: the ones to look at first. Fashion-MNIST's shirts, T-shirts and pullovers are where its labels are most often wrong."),
    ("code", 'health = trainlab.check_data("fashion-mnist", split="test", folds=3 if QUICK else 5, limit=1000 if QUICK else None, settings=settings)\nprint(health.summary())\nfor line in health.lines(per_kind=5):\n    print(line)'),
    ("code", 'from trainlab.data.health import write_picture\nwrite_picture(health, "fashion-mnist", None, settings, n=20, split="test")'),
    ("md", "Decisions go to a corrections file, never into the dataset: here the 20 least likely test images are excluded (in practice, look at each first and relabel or keep it: the dashboard's *Data health* page has a button for each). Training with `data.corrections` applies them and records the file's sha256 in the run."),
    ("code", 'suspects = [f"test:{s[\'index\']}" for s in health.suspects(20, split="test")]\ntrainlab.fix_data("fashion-corrections.yaml", dataset="fashion-mnist", exclude=suspects, settings=settings)\nfixed = trainlab.train("fashion-mlp", epochs=1 if QUICK else 5, overrides={**overrides, "data.corrections": "fashion-corrections.yaml"}, settings=settings)\nprint(f"test accuracy {run.metrics.test_acc:.4f} on all test images, {fixed.metrics.test_acc:.4f} without the 20 suspects")'),
])

nb("mnist-mlp.ipynb", [
    ("md", "# MNIST with a multilayer perceptron\n\nThe classic Keras MNIST MLP: images flattened to 784 values, scaled to 0–1, one-hot labels, `Dense 64 relu → Dense 10 softmax`, RMSprop, batch 100, 12 epochs. Preset `mnist-mlp`."),
    ("code", SETUP),
    ("code", 'trainlab.show_samples("mnist", n=10, settings=settings)'),
    ("code", 'from trainlab.training import summarize\nprint(summarize(trainlab.load_recipe("mnist-mlp"), settings))'),
    ("code", 'overrides = {"data.limit_train": 3000, "data.limit_test": 1000} if QUICK else {}\nrun = trainlab.train("mnist-mlp", epochs=1 if QUICK else 12, overrides=overrides, settings=settings)'),
    ("code", 'trainlab.plot_history(run)'),
    ("md", "## Precision and recall\n\nFor each digit: precision is the share of the images predicted as that digit that really are it (true positives over true plus false positives); recall is the share of that digit's images that were found (true positives over true positives plus false negatives)."),
    ("code", 'report = run.evaluate()\nprint(report.text())'),
    ("code", 'run.plot_predictions(range(9))'),
])

nb("tuning-walk.ipynb", [
    ("md", "# The tuning walk\n\nThe lesson tunes an MNIST MLP fed raw 0–255 pixels one change at a time: a lower learning rate, more epochs, a deeper network (which stops learning: vanishing gradients with sigmoid), then relu. Each step is a preset, `walk-1-baseline` … `walk-5-relu`; here they run in turn and are compared in one plot."),
    ("code", SETUP),
    ("md", "The walk feeds the network raw pixel values, 0 to 255, without dividing by 255 (`data.normalize: none`):"),
    ("code", 'trainlab.show_samples("mnist", index=0, settings=settings)'),
    ("code", 'WALK = ["walk-1-baseline", "walk-2-lower-lr", "walk-3-more-epochs", "walk-4-deeper", "walk-5-relu"]\nquick = {"data.limit_train": 2000, "data.limit_test": 500} if QUICK else {}\nwalk = [trainlab.train(name, overrides=quick, epochs=1 if QUICK else None, settings=settings, progress="none", live_plot=False) for name in WALK]\nfor run in walk:\n    print(f"{run.recipe.name:20s} val_acc {run.history[-1][\'val_acc\']:.4f}")'),
    ("md", "Each curve is labelled by what differs from the other runs: walk-2 and walk-3 differ only in the number of epochs, so with the same seed their first five epochs are identical: the green line hides the orange one. walk-4 (eleven sigmoid layers) stays at chance, 0.11: its gradients vanish. relu (walk-5) fixes it."),
    ("code", 'trainlab.plot_history(walk, title="The tuning walk (MNIST MLP, raw pixels)")'),
])

nb("cifar10-cnn.ipynb", [
    ("md", "# CIFAR-10 with a convolutional network\n\nThe Keras CIFAR-10 CNN: `Conv 32 → MaxPool → Conv 64 → MaxPool → Flatten → Dense 512 → Dense 10`, Adam, batch 32, validation split 0.2, 5 epochs. Here the data comes from the JPEG tree `cifar10-jpeg.zip` (`data.source`), with its class folders mapped onto CIFAR-10's labels."),
    ("code", SETUP),
    ("code", 'source = str(settings.data_dir / "cifar10-jpeg.zip")\ntrainlab.show_samples(source, n=20, settings=settings)'),
    ("code", 'from trainlab.training import summarize\nprint(summarize(trainlab.load_recipe("cifar10-cnn"), settings))'),
    ("code", 'overrides = {"data.source": source}\nif QUICK:\n    overrides.update({"data.limit_train": 2000, "data.limit_test": 500})\nrun = trainlab.train("cifar10-cnn", epochs=1 if QUICK else 5, overrides=overrides, settings=settings)'),
    ("md", "Validation loss that stops falling while training loss keeps falling is over-fitting; ten epochs make it plain (validation loss rises to about 1.9 in the lesson)."),
    ("code", 'trainlab.plot_history(run)'),
    ("code", 'print(run.evaluate().text())'),
    ("code", 'run.plot_predictions(range(12))'),
])

nb("browser-cnn.ipynb", [
    ("md", "# The browser lesson's CNN (TensorFlow.js MNIST)\n\nThe TF.js lesson trains `Conv 16 → MaxPool → Conv 32 → MaxPool → Conv 32 → Flatten → Dense 64 → Dense 10` with RMSprop, batch 64, a validation split of 0.15, for one epoch, while charts of loss and accuracy grow batch by batch. The lesson's code declares `learningRate = 0.01` but compiles with the string `'rmsprop'`, which TF.js turns into `rmsprop(0.001)`: the preset `mnist-tfjs-cnn` uses 0.001, as the lesson really runs."),
    ("code", SETUP),
    ("code", 'trainlab.show_samples("mnist", n=20, settings=settings)'),
    ("md", "The chart below the progress bar is redrawn as batches go by, as in the browser:"),
    ("code", 'overrides = {"data.limit_train": 3000, "data.limit_test": 1000} if QUICK else {}\nrun = trainlab.train("mnist-tfjs-cnn", overrides=overrides, settings=settings)'),
    ("code", 'print(f"validation accuracy {run.history[-1][\'val_acc\']:.4f}, test accuracy {run.metrics[\'test_acc\']:.4f}")'),
    ("code", 'run.plot_predictions(range(9))'),
])
