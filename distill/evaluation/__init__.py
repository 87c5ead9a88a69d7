"""Evaluation, the base layer teacher/ and student/ import: the harness (standard protocol), the
plain baselines, the comparison statistics (stats.py), the item-cold-start protocol (new_items.py)
and the report (report/). Studies built on trained students live in distill/studies/."""
