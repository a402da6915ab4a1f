"""Analysis and report: per-cell summaries, every table, the statistics, the figures.

Imported by the summary and plot jobs (numpy, pandas, scipy, matplotlib; no torch).
"""
