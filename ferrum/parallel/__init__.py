"""Tensor parallelism: one model split across the GPUs (or CPU processes) of one host.

`apply_tp` shards a finished model in place (column-parallel q/k/v and gate/up, row-parallel
o and down with one all-reduce each, vocabulary-parallel embedding and logits), so the model
files know nothing of it. `WorkerGroup` starts one process per extra rank; rank 0 (the caller's
process) keeps the scheduler and sends every worker each step's inputs, and all ranks run the
same forward in lockstep.
"""
