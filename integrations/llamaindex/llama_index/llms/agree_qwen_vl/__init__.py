"""A LlamaIndex chat LLM answering from page images with a local Qwen2.5-VL / Qwen2-VL model."""

from llama_index.llms.agree_qwen_vl.base import AgreeQwenVL

__all__ = ["AgreeQwenVL"]
