"""Dataset preparation and loading; see data/common.py for the on-disk format."""
