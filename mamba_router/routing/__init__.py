"""Routing: decide per request whether a Mamba or a Transformer model answers it, explain why, and log it."""
