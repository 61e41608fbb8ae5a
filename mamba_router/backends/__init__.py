"""Backends: the contract (:class:`Backend`), entry-point discovery, platform facts, and the choice of one backend.

This is the bottom of the library's layers (only :mod:`mamba_router.errors` is below it): nothing here loads a
model. Backend implementations live above: the built-in ``transformer`` backend in :mod:`mamba_router.transformer`,
``real-mamba`` and ``mamba2`` in their own distributions.
"""
