"""Entry point of the `keras-l0-shrink` command.

Loading TensorFlow writes log lines straight to the process's stderr before
its logging is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them. This
module lives outside the `keras_l0` package, whose import loads TensorFlow,
and imports the command with stderr sent to a temporary file that is shown
only if the import fails. A user mistake then prints one line.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_to_file(quiet=()):
    """Sends what is written to fd 2 (TensorFlow's and LiteRT's log lines)
    to a temporary file, shown only if an exception leaves that is not an
    instance of one of the `quiet` classes."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        replay = False
        try:
            yield
        except quiet:
            raise
        except BaseException:
            replay = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if replay:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_to_file():
        from keras_l0 import cli
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
