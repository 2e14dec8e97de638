"""Benchmarks: the service side by side with raw ffmpeg, a hand pipeline and a bare Flask route.

Each module runs alone (``python -m bench.stitch [--quick]``); ``python -m bench.run`` runs
them all and prints one table. See bench/RESULTS.md.
"""
