"""ctl.cli."""
