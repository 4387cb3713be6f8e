"""Built-in tasks a config can name in ``task._target_`` (cheap, dependency-free)."""
