"""Metamorphic figures on real footage (issue 11): a still photo's pan/zoom video, mirrored, half resolution and
time-reversed, through a pose model set and the fit. Prints the JSON of
:meth:`mocapflow.fit.metamorphic.MetamorphicFigures.summary`; asserts nothing.

Run: ``.venv/bin/python benchmarks/bench_metamorphic.py [--clip messi_pan]`` after ``make realdata`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="messi_pan", help="a still-photo clip of mocapflow.realdata")
    p.add_argument("--model-set", default="blazepose")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--max-iters", type=int, default=None, help="fit steps (default: the fit's default)")
    p.add_argument("--knots-per-second", type=float, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)

    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.metamorphic_suite import run_suite
    from mocapflow.settings import load_settings
    from models.modelset import resolve

    overrides = {"max_iters": args.max_iters, "knots_per_second": args.knots_per_second}
    options = FitOptions(**{k: v for k, v in overrides.items() if v is not None})
    settings = load_settings()
    model_set = resolve(args.model_set, settings.modelsets_dir, settings.cache_dir)
    t0 = time.perf_counter()
    figures, fits = run_suite(
        settings.cache_dir, model_set, clip=args.clip, seconds=args.seconds, fit_options=options
    )
    out = figures.summary()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["fit_converged"] = {k: bool(r.info.converged) for k, r in fits.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
