"""The boot setups mlxfix drives, one module each behind the interface in ``setup``.

``grub_debian``, ``grub_mkconfig``, ``grub2`` and ``grub2_bls`` (sharing ``grub_base``),
``systemd_boot`` and ``proxmox_systemd_boot`` (sharing ``kernelcmdline``) each say where the command
line is configured, how to edit and regenerate it, what the next boot gets and what a rollback undoes.
``detect`` compares the evidence of a Snapshot and names the setup; ``grubcfg`` runs a generated
grub.cfg as GRUB would; ``bls`` reads Boot Loader Spec entries and simulates grubby; ``nextboot``
puts the three layers (configured, generated, running) side by side. Pure code.
"""
