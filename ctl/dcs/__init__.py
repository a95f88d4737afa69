"""ctl.dcs."""
