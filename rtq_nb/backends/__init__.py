"""Model backends: handlers that serve requests from a real inference engine.

::

    openai_compat.py   OpenAIBackend: any OpenAI-compatible engine (vLLM, SGLang, Ollama,
                       llama.cpp's llama-server, TGI), streamed over SSE
    transformers_example.py   custom inference in the worker process (Hugging Face
                       transformers generate() with TextIteratorStreamer), importable
                       without torch
"""

from __future__ import annotations

from rtq_nb.backends.openai_compat import EngineOptions, OpenAIBackend

__all__ = ["EngineOptions", "OpenAIBackend"]
