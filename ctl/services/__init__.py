"""ctl.services."""
