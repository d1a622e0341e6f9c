"""The grub defaults files (/etc/default/grub and its drop-ins) as sh sees them, losslessly.

``shell`` parses POSIX sh into nodes that own every byte; ``grubfile`` gives a file's statements and
assignments; ``evaluate`` computes what sh would set, with the source literal behind every character;
``grubedit`` edits one variable token by token and proves the result with the same evaluator.
Pure code: bytes in, bytes and reasons out.
"""
