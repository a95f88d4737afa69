"""ctl.ha."""
