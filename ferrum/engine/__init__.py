"""The autoregressive batching engine: scheduler, paged KV blocks, model runner, sampler."""
