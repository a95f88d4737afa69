"""hactl: PostgreSQL high availability the Patroni way."""

__version__ = "0.1.0"
