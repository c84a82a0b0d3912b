"""Metamorphic figures on real footage (issue 11): a still photo's pan/zoom video, mirrored, half resolution and
time-reversed, through a pose model set and the fit. Prints the JSON of
:meth:`mocapflow.fit.metamorphic.MetamorphicFigures.summary`; asserts nothing.

Run: ``.venv/bin/python benchmarks/bench_metamorphic.py --image /work/realdata/messi5.jpg`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", required=True, help="a photo of one person (JPEG/PNG)")
    p.add_argument("--model-set", default=str(Path.home() / ".cache/mocapflow/modelsets/blazepose"))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--max-iters", type=int, default=None, help="fit steps (default: the fit's default)")
    p.add_argument("--knots-per-second", type=float, default=None)
    p.add_argument("--out", default=None, help="folder for the videos (default: a temporary one)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.metamorphic_suite import StillVideoSpec, run_suite
    from models.modelset import read_local

    overrides = {"max_iters": args.max_iters, "knots_per_second": args.knots_per_second}
    options = FitOptions(**{k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        figures, fits = run_suite(
            args.image, folder, read_local(Path(args.model_set)), spec=StillVideoSpec(seconds=args.seconds),
            fit_options=options,
        )
    out = figures.summary()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["fit_converged"] = {k: bool(r.info.converged) for k, r in fits.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
