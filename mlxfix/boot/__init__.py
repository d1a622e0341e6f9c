"""The boot setups mlxfix drives: where each configures the kernel command line, how it is
regenerated, and what the next boot will get.

``detect`` tells which setup a host has, from the evidence in a Snapshot; ``grubcfg`` runs a
generated grub.cfg as GRUB would, to find the entry the next boot takes; ``bls`` reads Boot Loader
Spec entries and simulates grubby; ``kernelcmdline`` edits /etc/kernel/cmdline; ``nextboot`` puts
the three layers (configured, generated, running) side by side. Pure code.
"""
