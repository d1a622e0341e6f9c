"""mlxfix: fix the Mellanox ConnectX-3 "Missing UAR, aborting" failure through the boot configuration."""

__version__ = "0.1.0"
