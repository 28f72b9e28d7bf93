"""The machine and the process trainlab runs in, below everything else.

- `process_wide`: every change trainlab makes for the whole process (seeding and putting the
  caller's generators back, glibc's malloc, the torch monkeypatch, the environment) and every
  private torch call, each gated on the torch versions it was tested with.
- `cpus`: the CPUs this process may use, how busy other programs keep them, the thread plan.
- `devices`: the device a run trains on.
- `signals`: one stop handler for Ctrl-C and SIGTERM (the CLI, dashboard workers, tuning workers).
"""
