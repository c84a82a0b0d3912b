"""Figures measured side by side: ``mocapflow bench`` (:mod:`benchmarks.suite`) and the single-topic scripts."""
