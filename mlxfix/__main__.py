"""``python -m mlxfix``."""

from mlxfix.cli import main

if __name__ == "__main__":
    main()
