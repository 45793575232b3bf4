"""Benchmarks: workloads that time ferrum against the baseline a user would pick instead."""
