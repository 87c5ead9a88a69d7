"""Distillation: texts, teachers, students, losses, training, evaluation, baselines."""
