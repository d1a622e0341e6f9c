"""All I/O: the machine mlxfix acts on, local (``local``) or over SSH (``ssh``), rooted at --root.

A host gathers a Snapshot (mlxfix.facts) in one batch for the pure core, and carries out a plan's
writes and commands with the durability the core asks for. Nothing else in mlxfix touches the OS.
"""
