"""The `kreg` command line: `kreg demo` (`python -m kreg demo`, `make demo`).

Usage::

    kreg [--version] [--help]
    kreg demo [--dataset {digits,breast_cancer,diabetes}] [--out DIR]
              [--quick] [--seed N] [--epochs N]

`kreg --help` and `kreg --version` import neither Keras nor its backend (the
package defers its imports when the command line imports it, see
`kreg/__init__.py`), and TensorFlow's C++ log lines are silenced before
TensorFlow is imported (`TF_CPP_MIN_LOG_LEVEL=2` unless already set).

Bad arguments (an unknown dataset, an unwritable or empty `--out`, a
negative seed) give a one-line error on stderr and exit status 2; a missing
`demo` extra (scikit-learn, matplotlib) gives one line naming
`pip install "kreg[demo]"` and exit status 1. The demo itself lives in
`kreg.demo`.
"""

import os

# Before anything imports TensorFlow: its C++ start-up lines are not ours to print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


_COMMANDS = ("demo",)
# TensorFlow's C++ start-up lines, printed while it loads, before its logging
# is set up (so TF_CPP_MIN_LOG_LEVEL does not reach them): information only.
_STARTUP_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ",
                  "To enable the following instructions:")


def _import_keras_quietly():
    """Import Keras (and its backend) with TensorFlow's start-up lines dropped.

    Everything else written to stderr meanwhile is written back, so an
    import error still shows.
    """
    import tempfile

    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not line.startswith(_STARTUP_NOISE):
                    sys.stderr.write(line)


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, received {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, received {value}")
        return value

    return parse


def build_parser(commands=True):
    """The `kreg` argument parser (subcommand `demo`).

    Args:
        commands: bool, default True. False leaves out the subcommands'
            own arguments (and their imports): enough for `kreg --help`,
            `kreg --version` and errors before a command.
    """
    from kreg import __version__

    parser = _Parser(prog="kreg", description="kreg: the classic regularization "
                     "toolkit for Keras 3.")
    parser.add_argument("--version", action="version", version=f"kreg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    demo = sub.add_parser(
        "demo", help="train one network with eight regularization techniques "
        "and compare them",
        description="Train the same network with no regularization, L2, L1, "
        "elastic net, inverted dropout, DropConnect, early stopping, and dropout "
        "+ L2 + early stopping; print a table and write it (Markdown, JSON) and "
        "plots to --out.")
    if not commands:
        return parser
    from kreg.demo import DATASETS

    demo.add_argument("--dataset", choices=DATASETS, default="digits",
                      help="a scikit-learn dataset (default: digits)")
    demo.add_argument("--out", default="kreg-demo",
                      help="output directory, created if needed (default: kreg-demo)")
    demo.add_argument("--quick", action="store_true",
                      help="fewer epochs and Monte Carlo samples (under a minute)")
    demo.add_argument("--seed", type=_int_at_least(0), default=0,
                      help="seed of the split, weights, masks and samples (default: 0)")
    demo.add_argument("--epochs", type=_int_at_least(1), default=None,
                      help="most epochs per technique (default: 60, 100 for "
                      "diabetes; 12/20 with --quick)")
    return parser


def main(argv=None):
    """Run the `kreg` command line; returns the exit status.

    Args:
        argv: list of str or None, default None (`sys.argv[1:]`).

    Returns:
        int: 0 on success, 2 for bad arguments, 1 when the demo's packages
        (the `demo` extra) are missing.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    # Only a command needs its arguments' parser (and the imports behind it).
    command = any(a in _COMMANDS for a in args)
    if command:
        try:
            _import_keras_quietly()
        except ImportError as exc:  # Keras's backend is not installed
            backend = os.environ.get("KERAS_BACKEND", "tensorflow")
            sys.stderr.write(
                f"kreg: error: Keras cannot import its backend {backend!r} (KERAS_BACKEND): "
                f"{exc}. Install it (TensorFlow: pip install \"kreg[tensorflow]\") or set "
                "KERAS_BACKEND to an installed one (jax, torch)\n")
            return 1
    parser = build_parser(commands=command)
    try:
        args = parser.parse_args(args)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "demo":
        import kreg
        from kreg import demo

        kreg._import_public_api()  # as `import kreg` does: every class registered

        try:
            demo.require_demo_extra()
        except demo.MissingExtraError as exc:
            sys.stderr.write(f"kreg: error: {exc}\n")
            return 1
        try:
            if not args.out:
                raise OSError(22, "an empty path (use '.' for the current directory)")
            demo.ensure_writable_dir(args.out)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            sys.stderr.write(
                f"kreg demo: error: cannot write to --out {args.out!r}: {reason}\n")
            return 2
        demo.run(args.dataset, args.out, quick=args.quick, seed=args.seed,
                 epochs=args.epochs)
        return 0
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
