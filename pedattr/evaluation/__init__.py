"""Evaluation: the paper's metrics, what ``pedattr eval`` and ``pedattr calibrate`` run, and
the plots of their reports."""
