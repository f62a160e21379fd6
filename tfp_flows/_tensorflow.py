"""Importing TensorFlow quietly, for the command line and the examples."""

import os
import sys


def import_tensorflow():
    """Imports TensorFlow; with TF_CPP_MIN_LOG_LEVEL=3, silently.

    TensorFlow's C++ library prints a few lines before its logging starts
    (oneDNN notices, "Could not find cuda drivers", CPU instruction hints),
    which TF_CPP_MIN_LOG_LEVEL does not reach: at level 3 they are dropped too,
    by pointing the process's stderr at /dev/null for the import. Python-side
    TensorFlow warnings (retracing notices) go to ERROR level as well. Any
    other level imports TensorFlow as it is, so a user's own
    TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def quiet_by_default():
    """TF_CPP_MIN_LOG_LEVEL=3 unless the user set it: the command line's and examples' default."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
