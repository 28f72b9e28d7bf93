"""trainlab: train, watch, evaluate and use image classifiers on MNIST, Fashion-MNIST, CIFAR-10 and image trees.

    import trainlab
    run = trainlab.train("mnist-mlp", epochs=3, optimizer__lr=0.002)
    trainlab.resume(run_id)                   # an interrupted run, exactly where it stopped
    run.history, run.evaluate(), run.predict(images)
    trainlab.find_lr("mnist-mlp").suggestion
    trainlab.tune("walk-1-baseline", "walk", trials=20).best_recipe
    trainlab.export_onnx(run).text()          # model.onnx: uint8 images in, probabilities out
    trainlab.check_data("mnist").suspects(50) # the least likely labels, by K-fold confident learning

The public names below load on first use (PEP 562), so `import trainlab` and the `trainlab`
command start without importing torch, matplotlib or SQLAlchemy until something needs them.
"""

from __future__ import annotations

from trainlab.lazy import lazy_exports
from trainlab.version import __version__

_EXPORTS = {
    "Callback": "trainlab.engine.callbacks", "Dataset": "trainlab.data.readers", "EvalReport": "trainlab.metrics",
    "Predictions": "trainlab.engine.inference", "Recipe": "trainlab.recipes", "Run": "trainlab.runs.run",
    "Settings": "trainlab.settings", "TrainlabError": "trainlab.errors", "load_dataset": "trainlab.data.registry",
    "load_image_tree": "trainlab.data.trees", "load_recipe": "trainlab.recipes", "load_run": "trainlab.runs.run",
    "load_settings": "trainlab.settings", "plot_history": "trainlab.plots", "curves_png": "trainlab.runs.curves", "preset_names": "trainlab.recipes",
    "train": "trainlab.training.api", "resume": "trainlab.training.api", "rerun": "trainlab.training.api", "show_samples": "trainlab.analysis.pictures", "find_lr": "trainlab.tuning.lrfind",
    "tune": "trainlab.tuning.study", "TuneOptions": "trainlab.tuning.study", "study_report": "trainlab.tuning.study", "Metrics": "trainlab.runs.record", "load_space": "trainlab.tuning.space",
    "export_onnx": "trainlab.serving.export", "OnnxRun": "trainlab.serving.export", "create_app": "trainlab.web.app",
    "check_data": "trainlab.data.health", "fix_data": "trainlab.data.health", "HealthReport": "trainlab.data.health",
    "read_corrections": "trainlab.data.corrections", "build_report": "trainlab.analysis.report", "write_report": "trainlab.analysis.report",
    "to_tensorboard": "trainlab.analysis.share", "to_mlflow": "trainlab.analysis.share",
}
__all__ = [*_EXPORTS, "__version__"]
__getattr__, _dir = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
