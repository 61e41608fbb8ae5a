"""Serving (reserved): the batching engine and the HTTP app (OpenAI-compatible API) will live here, above routing."""
