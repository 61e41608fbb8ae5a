"""OpenAI-compatible servers as targets of the router: vLLM or SGLang serving a Mamba or hybrid model (tensor
parallel), another machine's ``mamba-router serve``, or any server that speaks ``/v1/chat/completions``.

Built into the core rather than shipped as a distribution of its own: it runs no model and needs no accelerator,
only an HTTP client (``pip install 'mamba-router[remote]'``), and it is configured with endpoints (``[remote]`` in
the config) rather than found on the platform, so the router builds it from its settings instead of discovering it.

- :mod:`.endpoints`: the endpoints of one family, which one takes the next request (least outstanding requests),
  and which are resting after a failure (cooldown).
- :mod:`.client`: one call to one endpoint (plain or streamed), and the failures that justify trying another.
- :mod:`.model`: :class:`~.model.RemoteModel`, a loaded model whose every call goes to the pool with retries.
- :mod:`.backend`: the backend object the router holds for a family served remotely.
"""
