"""The training step's precision: what `auto` picks, that bf16-mixed really changes the arithmetic,
and that a run keeps its precision through a resume and a rerun, bit for bit."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import StopAt
from torch import nn

import trainlab
from trainlab.engine import precision as precision_mod
from trainlab.engine.callbacks import Callback
from trainlab.engine.precision import resolve_precision
from trainlab.errors import Interrupted, TrainlabError
from trainlab.recipes import RecipeError
from trainlab.runs.record import read_record
from trainlab.settings import load_settings
from trainlab.system import cpus

CONV = {"data.flatten": False, "model.layers": [
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "maxpool", "pool_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 3, "activation": "softmax"}]}
BN_CONV = {**CONV, "model.layers": [CONV["model.layers"][0], {"type": "batchnorm"}, *CONV["model.layers"][1:]]}


class Seen(Callback):
    """The precision each training run began with."""

    def __init__(self):
        self.precisions: list[str] = []

    def on_train_begin(self, state):
        self.precisions.append(state.precision)


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that multiplies bf16 in hardware, whatever this one does."""
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: True)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert {"avx2", "avx512_bf16"} <= cpus.cpu_flags(info)
    assert cpus.native_bf16(cpus.cpu_flags(info)) and cpus.native_bf16({"amx_bf16"})
    assert not cpus.native_bf16({"avx512f", "avx512bw"})  # AVX-512 alone emulates bf16
    assert cpus.cpu_flags(tmp_path / "missing") == set()


def test_auto_picks_bf16_for_plain_conv_nets_on_native_bf16_cpus(bf16_cpu, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    dense = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert resolve_precision("auto", conv, cpu) == ("bf16-mixed", "auto: conv net on a CPU with native bf16")
    assert resolve_precision("auto", bn, cpu)[0] == "bf16-mixed"
    assert resolve_precision("auto", dense, cpu)[0] == "fp32"
    assert resolve_precision("auto", dense, cpu, "fused dense") == ("fp32", "auto: the fused dense step is fp32")
    assert resolve_precision("auto", dense, cuda)[0] == "bf16-mixed"
    assert resolve_precision("fp32", conv, cuda) == ("fp32", "set")
    assert resolve_precision("bf16-mixed", dense, cpu)[0] == "bf16-mixed"
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: False)
    assert resolve_precision("auto", conv, cpu) == ("fp32", "auto: this CPU has no native bf16")


def test_a_bad_precision_is_one_line_naming_the_choices():
    with pytest.raises(RecipeError) as err:
        trainlab.load_recipe("mnist-tfjs-cnn", {"precision": "fp16"})
    msg = str(err.value)
    assert "precision" in msg and "bf16-mixed" in msg and "\n" not in msg


def test_bf16_mixed_changes_the_arithmetic_and_is_recorded(tiny_train, tmp_path):
    seen = Seen()
    bf = tiny_train({**CONV, "precision": "bf16-mixed"}, runs_dir=tmp_path / "a", callbacks=[seen])
    fp = tiny_train({**CONV, "precision": "fp32"}, runs_dir=tmp_path / "b", callbacks=[seen])
    assert seen.precisions == ["bf16-mixed", "fp32"]
    assert (read_record(bf.run_dir).precision, read_record(fp.run_dir).precision) == ("bf16-mixed", "fp32")
    assert read_record(bf.run_dir).precision_reason == "set in the recipe"
    # the same seed and data, different arithmetic: the weights differ, though training works in both
    assert (bf.run_dir / "model.safetensors").read_bytes() != (fp.run_dir / "model.safetensors").read_bytes()
    assert bf.metrics["test_acc"] > 0.5 and fp.metrics["test_acc"] > 0.5
    # evaluation on the CPU is fp32 whatever the training precision: the recorded test metrics are
    # what an fp32 forward of the saved weights gives (what `trainlab evaluate` and ONNX compute)
    again = bf.evaluate(split="test")
    assert again.accuracy == pytest.approx(bf.metrics["test_acc"], abs=1e-6)
    assert again.loss == pytest.approx(bf.metrics["test_loss"], rel=1e-6)
    logits = bf.logits("test")[0]
    x = bf.preprocess(bf.data.x_test).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fp32 = bf.model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = bf.model(x).float()
    assert torch.equal(logits, fp32) and not torch.equal(logits, bf16)


def test_a_bf16_run_resumes_bit_identical_in_its_recorded_precision(tiny_train, tmp_path, bf16_cpu, monkeypatch):
    ref = tiny_train(CONV, runs_dir=tmp_path / "a")
    assert read_record(ref.run_dir).precision == "bf16-mixed"  # auto, on a (patched) native-bf16 CPU
    stop, seen = threading.Event(), Seen()
    with pytest.raises(Interrupted) as err:
        tiny_train(CONV, runs_dir=tmp_path / "b", stop=stop, callbacks=[StopAt(1, 4, stop)])
    # resumed where auto would now pick fp32: the run continues in the precision it started in
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: False)
    resumed = tiny_train(runs_dir=tmp_path / "b", resume=err.value.run_id, callbacks=[seen])
    assert seen.precisions == ["bf16-mixed"]
    assert (ref.run_dir / "model.safetensors").read_bytes() == (resumed.run_dir / "model.safetensors").read_bytes()
    assert read_record(resumed.run_dir).precision == "bf16-mixed"


def test_a_run_recorded_before_precision_existed_continues_as_it_trained():
    from trainlab.runs.record import RunRecord
    from trainlab.training.api import recorded_precision
    old = RunRecord(run_id="r", recipe="x", recipe_digest="d", status="interrupted", seed=0)
    assert old.precision is None  # run.json written before `precision` existed
    assert recorded_precision(old) == "fp32"  # its CPU step was fp32
    assert recorded_precision(old.model_copy(update={"device": "cuda:0"})) == "bf16-mixed"  # CUDA autocast was bf16
    assert recorded_precision(old.model_copy(update={"precision": "bf16-mixed"})) == "bf16-mixed"


def test_rerun_trains_in_the_recorded_precision(tiny_ds, tmp_path, bf16_cpu, monkeypatch):
    from conftest import tiny_recipe
    first = trainlab.train(tiny_recipe(**CONV), dataset=tiny_ds, progress="none", runs_dir=tmp_path)
    monkeypatch.setattr(precision_mod, "native_bf16", lambda: False)
    again = trainlab.rerun(first.run_dir, dataset=tiny_ds, progress="none", runs_dir=tmp_path)
    assert read_record(again.run_dir).precision == "bf16-mixed"
    # the same file, metadata (the recipe, still `precision: auto`) included
    assert (first.run_dir / "model.safetensors").read_bytes() == (again.run_dir / "model.safetensors").read_bytes()
    assert read_record(again.run_dir).precision_reason.startswith("settings.precision")


def test_trainlab_precision_sets_what_auto_recipes_train_in(tiny_train, tmp_path, bf16_cpu, monkeypatch):
    monkeypatch.setenv("TRAINLAB_PRECISION", "fp32")
    auto = read_record(tiny_train(CONV, runs_dir=tmp_path / "a").run_dir)
    assert (auto.precision, auto.precision_reason.split(" ")[0]) == ("fp32", "settings.precision")
    explicit = read_record(tiny_train({**CONV, "precision": "bf16-mixed"}, runs_dir=tmp_path / "b").run_dir)
    assert (explicit.precision, explicit.precision_reason) == ("bf16-mixed", "set in the recipe")  # the recipe wins
    monkeypatch.setenv("TRAINLAB_PRECISION", "fp16")
    with pytest.raises(TrainlabError) as err:
        load_settings()
    assert "setting precision" in str(err.value) and "bf16-mixed" in str(err.value) and "\n" not in str(err.value)


def test_auto_records_why_a_dense_stack_stays_fp32(tiny_train, tmp_path, bf16_cpu):
    fused = read_record(tiny_train(runs_dir=tmp_path / "a").run_dir)
    assert (fused.precision, fused.precision_reason) == ("fp32", "auto: the fused dense step is fp32")
    dropout = {"model.layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
                                {"type": "dense", "units": 3, "activation": "softmax"}]}
    plain = read_record(tiny_train(dropout, runs_dir=tmp_path / "b").run_dir)  # autograd, not fused
    assert (plain.precision, plain.precision_reason) == ("fp32", "auto: not a conv net")
    conv = read_record(tiny_train(BN_CONV, runs_dir=tmp_path / "c").run_dir)
    assert (conv.precision, conv.precision_reason) == ("bf16-mixed", "auto: conv net on a CPU with native bf16")
