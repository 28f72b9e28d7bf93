"""A dashboard job's process: reads {recipe, resume, check, settings} as JSON on stdin, trains (or,
given `check`, checks a dataset's health), and writes one JSON object a line on stdout: {"run": id}
when training begins (a check: {"progress": ...}), then {"end": status}.
SIGINT and SIGTERM stop it as Ctrl-C stops the CLI (the one stop handler, system/signals.py): the
run stops after the current step, checkpointed, marked interrupted; a second SIGINT stops at once."""

from __future__ import annotations

import json
import sys
import threading

from trainlab.engine.callbacks import Callback
from trainlab.errors import StopRun, first_line
from trainlab.system.signals import Interrupt, StopSignals


class Announce(Callback):
    """Tells the server the run id as soon as training begins."""

    def on_train_begin(self, state) -> None:
        say(run=state.run_id)


def say(**msg) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def main() -> int:
    handler = StopSignals(armed=True)
    handler.install()
    stop = handler.stop
    say(ready=True)  # the server sends a Stop as SIGINT only from now on: before, it would be a KeyboardInterrupt
    try:
        order = json.loads(sys.stdin.read())
        from trainlab.recipes import validate
        from trainlab.settings import Settings
        from trainlab.system.process_wide import prepare_short_process
        from trainlab.training.api import resume, train
        prepare_short_process()
        recipe = validate(order["recipe"]) if order.get("recipe") is not None else None
        if stop.is_set():  # stopped while starting: nothing to train or record
            say(end="cancelled")
            return 0
        if order.get("check") is not None:
            return check(order["check"], Settings(**order["settings"]), stop)
        if order.get("tune") is not None:
            return search(order["tune"], Settings(**order["settings"]), stop)
        settings, common = Settings(**order["settings"]), dict(progress="none", stop=stop, callbacks=[Announce()])
        run = resume(order["resume"], settings=settings, **common) if order.get("resume") else \
            train(recipe, settings=settings, **common)
        say(end="completed", run_id=run.run_id)
    except StopRun as exc:
        say(end=exc.status, run_id=getattr(exc, "run_id", None))
    except Interrupt:  # a second stop: at once, recorded as interrupted
        say(end="interrupted")
    except Exception as exc:  # the worker reports, the server shows it
        say(end="failed", error=first_line(exc, 500))
    return 0


def search(order: dict, settings, stop: threading.Event) -> int:
    """A search started from the Studies page: its trials one after the other, progress after each."""
    from trainlab.tuning.study import tune
    trials = order.get("trials")

    def report(row) -> None:
        say(progress={"stage": "trial", "done": row.number + 1, "total": trials, "state": row.state, "value": row.value})

    rep = tune(order["preset"], order["space"], trials=trials, timeout=order.get("timeout"), study=order.get("study"),
               settings=settings, stop=stop, report=report, jobs=1, overrides=order.get("overrides") or None)
    say(end="completed", report=rep.name)
    return 0


def check(order: dict, settings, stop: threading.Event) -> int:
    """A data check: progress lines while it runs, then the report's file."""
    from trainlab.data.health import check_data, save_report
    report = check_data(order["dataset"], split=order.get("split", "all"), folds=order.get("folds", 5), limit=order.get("limit"),
                        settings=settings, stop=stop, progress=lambda stage, done, total: say(
                            progress={"stage": stage, "done": done, "total": total}))
    say(end="completed", report=str(save_report(report, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
