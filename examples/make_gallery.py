"""Regenerates the README gallery: runs every example and writes one small figure each to docs/.

    python examples/make_gallery.py [--quick] [NAME ...]

Each example runs with its defaults (about 25 minutes in all on two CPU
cores; `--quick` uses the examples' quick modes) into runs/examples/NAME/,
then its gallery figure is copied to docs/NAME.png, shrunk to at most
900 pixels wide and a 256-colour palette so each stays under 200 KB.
"""

import argparse
import pathlib
import subprocess
import sys

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_BYTES = 200_000

# example script -> the figure it writes that the gallery shows
GALLERY = {
    "distribution_mapping": "moons_mapping.png",
    "planar_sin": "samples.png",
    "generative_classification": "class_samples.png",
    "inverse_problem": "posteriors.png",
    "variational_inference": "densities.png",
    "image_generation": "samples.png",
    "anomaly_detection": "typical.png",
    "continuous_flow": "trajectories.png",
}


def shrink(source, target, max_width=900):
    image = Image.open(source).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)))
    image.quantize(colors=256).save(target, optimize=True)
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{target} is {size} bytes, over the gallery's {MAX_BYTES}.")
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the examples' quick modes")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"examples (default: all of {', '.join(GALLERY)})"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(GALLERY))
    if unknown:
        parser.error(f"no gallery example {', '.join(unknown)}; choose from {', '.join(GALLERY)}")
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    for name in args.names or GALLERY:
        figure = GALLERY[name]
        out = ROOT / "runs" / "examples" / name
        command = [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out)]
        print(f"$ {' '.join(command[1:])}{' --quick' if args.quick else ''}", flush=True)
        subprocess.run(command + (["--quick"] if args.quick else []), check=True, cwd=ROOT)
        size = shrink(out / figure, docs / f"{name}.png")
        print(f"docs/{name}.png: {size / 1000:.0f} KB", flush=True)


if __name__ == "__main__":
    main()
