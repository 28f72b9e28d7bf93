"""The data path: datasets by name or folder, read as uint8 arrays and prepared for the model.

- `registry`: the built-in datasets (MNIST, Fashion-MNIST, CIFAR-10), where their files are found,
  downloads and verification, and `load_dataset`, the one entry point.
- `readers`: the file formats (IDX, the CIFAR-10 archive) and the in-memory `Dataset`.
- `trees`: a user's folder or .zip of images as a dataset (sizes chosen, decoded once, cached).
- `images`: one image file to a dataset-format array (guarded decoding, EXIF, the styles).
- `handwriting`: digits drawn or photographed the way users make them, for robustness checks.
- `preprocess`: uint8 pixels to model input, recorded with every run.
- `augment`: batch augmentation on whole tensors, drawn from the run's generator.
"""

from trainlab.lazy import lazy_exports

_EXPORTS = {"DATASETS": "trainlab.data.registry", "Dataset": "trainlab.data.readers", "input_spec": "trainlab.data.registry", "load_dataset": "trainlab.data.registry", "load_image_tree": "trainlab.data.trees"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
