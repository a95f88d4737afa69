"""`python -m ctl` runs the hactl CLI."""

from ctl.cli.app import main

if __name__ == "__main__":
    main()
