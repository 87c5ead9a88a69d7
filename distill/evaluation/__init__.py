"""Evaluation: the harness (standard protocol), the plain baselines, paired statistics, the report,
the new-items and lightweight-students sections, the champion/challenger comparison, the monitor."""
