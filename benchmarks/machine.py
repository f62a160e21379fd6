"""What every benchmark's JSON records about the machine and the stack, and how it is written."""

import json
import os
import platform
import sys

import keras
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows


def machine_info():
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "tensorflow_probability": tfp.__version__,
        "keras": keras.__version__,
        "tfp_flows": tfp_flows.__version__,
        # The machine is shared: a high load average means noisier timings.
        "load_average_start": list(os.getloadavg()),
    }


def write_report(report, path):
    """Writes `report` as indented JSON to `path`, creating its folder; prints where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")
