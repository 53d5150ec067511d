"""`python -m qurelib.train restore-history RUN_DIR` (`state.main`)."""

from qurelib.train.state import main

if __name__ == "__main__":
    raise SystemExit(main())
