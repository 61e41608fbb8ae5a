"""Layers shared by the model families; each calls a backend's :class:`~mamba_router.models.ops.SSMOps`."""
