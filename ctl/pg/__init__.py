"""ctl.pg."""
