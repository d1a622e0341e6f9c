"""``python -m mlxfix``."""

from mlxfix.entry import main

if __name__ == "__main__":
    main()
