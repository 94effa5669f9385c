"""``python -m mineral3d.cli``."""

from mineral3d.cli import main

main()
