"""The Keras 3 / TensorFlow peer: a trainlab recipe written the way the Keras tutorials write it.

Run by bench/compare.py with the Python of its own TensorFlow virtual environment:
    python keras_peer.py RECIPE.json DATA.npz SEED
Prints one JSON line: train_seconds (model.fit), test_acc, n_train, epochs.
It imports no trainlab code: the recipe arrives as plain JSON.
"""

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

# KERAS_PEER_POLICY=mixed_bfloat16: Keras' own mixed precision (bf16 compute, fp32 variables), the
# counterpart of trainlab's precision: bf16-mixed; the softmax output stays float32 as Keras' guide says.
POLICY = os.environ.get("KERAS_PEER_POLICY")


def build(recipe: dict, input_shape, classes: int = 10) -> keras.Sequential:
    if POLICY:
        keras.mixed_precision.set_global_policy(POLICY)
    model = keras.Sequential([keras.Input(shape=input_shape)])
    last = len(recipe["model"]["layers"]) - 1
    aug = recipe.get("augment", {})
    if aug.get("crop") or aug.get("translate"):
        n = aug.get("crop") or aug.get("translate")
        model.add(layers.RandomTranslation(n / input_shape[0], n / input_shape[1],
                                           fill_mode="reflect" if aug.get("crop") else "constant"))
    if aug.get("flip"):
        model.add(layers.RandomFlip("horizontal"))
    for i, spec in enumerate(recipe["model"]["layers"]):
        t = spec["type"]
        if t == "dense":
            units = classes if spec["units"] == "classes" else spec["units"]  # `units: classes` follows the data
            model.add(layers.Dense(units, activation=spec.get("activation", "linear"), use_bias=spec.get("use_bias", True),
                                   **({"dtype": "float32"} if POLICY and i == last else {})))
        elif t == "conv2d":
            model.add(layers.Conv2D(spec["filters"], spec.get("kernel_size", 3), strides=spec.get("strides", 1),
                                    padding=spec.get("padding", "valid"), activation=spec.get("activation", "linear"),
                                    use_bias=spec.get("use_bias", True)))
        elif t == "maxpool":
            model.add(layers.MaxPooling2D(spec.get("pool_size", 2), strides=spec.get("strides"), padding=spec.get("padding", "valid")))
        elif t == "avgpool":
            if spec.get("global"):
                model.add(layers.GlobalAveragePooling2D())
            else:
                model.add(layers.AveragePooling2D(spec.get("pool_size", 2), strides=spec.get("strides"), padding=spec.get("padding", "valid")))
        elif t == "flatten":
            model.add(layers.Flatten())
        elif t == "dropout":
            model.add(layers.Dropout(spec["rate"]))
        elif t == "batchnorm":
            model.add(layers.BatchNormalization(momentum=spec.get("momentum", 0.99), epsilon=spec.get("epsilon", 1e-3)))
        elif t == "activation":
            model.add(layers.Activation(spec["activation"]))
        else:
            raise SystemExit(f"keras peer: layer type {t} is not translated")
    return model


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """torch.optim.lr_scheduler.OneCycleLR (cosine annealing, two phases) as a Keras schedule."""

    def __init__(self, max_lr, total, pct, div, final_div):
        self.max_lr, self.total, self.pct, self.div, self.final_div = max_lr, total, pct, div, final_div

    def __call__(self, step):
        from keras import ops
        step = ops.cast(step, "float32")
        init, end = self.max_lr / self.div, self.max_lr / self.div / self.final_div
        up = float(self.pct * self.total) - 1.0
        down = float(self.total) - 1.0

        def cos(a, b, frac):
            return b + (a - b) / 2.0 * (1.0 + ops.cos(math.pi * frac))

        warm = cos(init, self.max_lr, ops.clip(step / up, 0.0, 1.0))
        cool = cos(self.max_lr, end, ops.clip((step - up) / (down - up), 0.0, 1.0))
        return ops.where(step <= up, warm, cool)


def main() -> None:
    recipe = json.load(open(sys.argv[1]))
    data = np.load(sys.argv[2])
    seed = int(sys.argv[3])
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    d = recipe["data"]

    def norm(x):
        x = x.astype("float32")
        if d["normalize"] == "scale":
            x /= 255.0
        elif d["normalize"] == "standardize":
            x = (x / 255.0 - mean) / std
        return x.reshape(len(x), -1) if d.get("flatten") else x

    n_fit = len(x_train) if not isinstance(d["validation"], float) else int(len(x_train) * (1 - d["validation"]))
    mean = x_train[:n_fit].reshape(-1, x_train.shape[-1]).mean(0) / 255.0
    std = x_train[:n_fit].reshape(-1, x_train.shape[-1]).std(0) / 255.0
    x_train, x_test = norm(x_train), norm(x_test)
    model = build(recipe, x_train.shape[1:], int(max(y_train.max(), y_test.max())) + 1)

    o, sched, bs, epochs = recipe["optimizer"], recipe["schedule"], recipe["batch_size"], recipe["epochs"]
    lr = o["lr"]
    if sched["name"] == "onecycle":
        lr = OneCycle(sched.get("max_lr") or o["lr"], epochs * math.ceil(n_fit / bs), sched["pct_start"],
                      sched["div_factor"], sched["final_div_factor"])
    elif sched["name"] == "cosine":
        steps = epochs * math.ceil(n_fit / bs)
        warm = int(round(sched["warmup_epochs"] * math.ceil(n_fit / bs)))
        lr = keras.optimizers.schedules.CosineDecay(o["lr"] * 1e-3 if warm else o["lr"], steps - warm,
                                                    alpha=sched["min_lr"] / o["lr"], warmup_target=o["lr"] if warm else None,
                                                    warmup_steps=warm)
    wd = o.get("weight_decay") or None
    if o["name"] == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=o["momentum"], nesterov=o["nesterov"], weight_decay=wd)
    elif o["name"] == "rmsprop":
        opt = keras.optimizers.RMSprop(lr, rho=o["rho"], momentum=o["momentum"], epsilon=o["eps"], weight_decay=wd)
    elif o["name"] == "adam":
        opt = keras.optimizers.Adam(lr, beta_1=o["beta1"], beta_2=o["beta2"], epsilon=o["eps"], weight_decay=wd)
    else:
        opt = keras.optimizers.AdamW(lr, weight_decay=o["weight_decay"], beta_1=o["beta1"], beta_2=o["beta2"], epsilon=o["eps"])
    ls = recipe["loss"]["label_smoothing"]
    if ls:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=ls)
        y_fit, y_eval = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    else:
        loss, y_fit, y_eval = "sparse_categorical_crossentropy", y_train, y_test
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])

    cbs = []
    cb_cfg = recipe.get("callbacks", {})
    monitor = lambda m: m.replace("acc", "accuracy")  # noqa: E731
    if cb_cfg.get("early_stopping"):
        e = cb_cfg["early_stopping"]
        cbs.append(keras.callbacks.EarlyStopping(monitor(e["monitor"]), min_delta=e["min_delta"], patience=e["patience"],
                                                 restore_best_weights=e["restore_best"]))
    if cb_cfg.get("reduce_lr"):
        r = cb_cfg["reduce_lr"]
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor(r["monitor"]), factor=r["factor"], patience=r["patience"],
                                                     min_lr=r["min_lr"], min_delta=r.get("min_delta", 1e-4),
                                                     cooldown=r.get("cooldown", 0)))
    kw = {}
    if isinstance(d["validation"], float):
        kw["validation_split"] = d["validation"]
    elif d["validation"] == "test":
        kw["validation_data"] = (x_test, y_eval)
    t0 = time.perf_counter()
    model.fit(x_train, y_fit, batch_size=bs, epochs=epochs, verbose=0, callbacks=cbs, **kw)
    train_seconds = time.perf_counter() - t0
    probs = model.predict(x_test, batch_size=recipe.get("eval_batch_size", 256), verbose=0)
    if recipe.get("tta") == "flip" and x_test.ndim == 4:
        probs = 0.5 * (probs + model.predict(x_test[:, :, ::-1], batch_size=256, verbose=0))
    acc = float((probs.argmax(1) == y_test).mean())
    print(json.dumps({"train_seconds": train_seconds, "test_acc": acc, "n_train": n_fit, "epochs": epochs,
                      "versions": f"keras {keras.__version__}, {backend_version()}"}))


def backend_version() -> str:
    """The backend Keras ran on (TensorFlow on the CPU benches, JAX on the GPU check) and its version."""
    name = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(name, name)
    try:
        return f"{name} {__import__(module).__version__}"
    except ImportError:
        return name


if __name__ == "__main__":
    main()
