"""``python -m mlxfix``."""

from mlxfix.cli.entry import main

if __name__ == "__main__":
    main()
