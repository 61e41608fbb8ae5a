"""Generation: loaded models and their decoding loop, checked requests, typed results, and document states.

:func:`~mamba_router.generation.loading.load_model` is the entry point; :class:`~.loaded_model.TokenizerModel` is
the base every backend's model builds on, and :class:`~.ssm_model.SSMModel` is the one loaded model of every Mamba
backend.
"""
