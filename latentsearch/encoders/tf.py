"""TensorFlow and Keras, imported on first use and without their start-up chatter."""

from __future__ import annotations

import sys

__all__ = ["import_keras", "import_tensorflow"]


def import_tensorflow():
    """Import TensorFlow (and Keras) on first use without its start-up chatter.

    TensorFlow's C++ side writes "oneDNN custom operations are on", "Could not find cuda
    drivers" and the absl warning straight to file descriptor 2 while it is imported,
    whatever TF_CPP_MIN_LOG_LEVEL says; so during the import fd 2 points at a temporary
    file, replayed on stderr only if the import fails.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    import os
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: import as is
        import keras  # noqa: F401
        import tensorflow

        return tensorflow
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def import_keras():
    """Keras, imported quietly (see :func:`import_tensorflow`)."""
    import_tensorflow()
    import keras

    return keras
