"""What every shell (issuer, verifier, keys, tools) needs from the host, written once.

Files (owner-only creation, atomic writes with a directory fsync, secret-mode
checks, advisory locks, configured files read into the caller's own error), child
processes stopped gracefully, times for people (Beijing time) and machines (UTC),
and the CLI entry-point wrapper. It imports nothing of the project, so a hospital
terminal that installs only ``healthcode[verifier]`` has it.
"""

__all__: list[str] = []
