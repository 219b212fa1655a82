"""Experiments: configs, training jobs, evaluation, studies, statistics and reports."""
