"""`python -m kreg`: the command-line entry point (see `kreg.cli`)."""

from kreg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
