"""Text pipelines: sentence and image+text embeddings (`ferrum.text.embed.Embedder`)."""
