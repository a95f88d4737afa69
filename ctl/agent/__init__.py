"""ctl.agent."""
