"""Models: reading checkpoints (source, config, weights, tokenizer), the family registry, the layer stacks of each
family written once against the ops interface (:mod:`mamba_router.models.ops`), and the reference ops.

Nothing here decodes text or knows about backends' discovery: :mod:`mamba_router.generation` runs these models.
"""
