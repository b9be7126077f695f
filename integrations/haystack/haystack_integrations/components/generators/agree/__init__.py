"""Haystack chat generator answering from page images with a local Qwen2.5-VL / Qwen2-VL model."""

from .chat_generator import AgreeQwenVLChatGenerator

__all__ = ["AgreeQwenVLChatGenerator"]
