"""A free TCP port on 127.0.0.1 for the benches' servers (the library's own helper)."""

from trainlab.training.launcher import free_local_port as free_port

__all__ = ["free_port"]
