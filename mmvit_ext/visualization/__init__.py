"""Explicit attention weights of the four families and tools to record and draw them."""
from .recorder import AttentionRecord, AttentionRecorder, record_attention

__all__ = ['AttentionRecord', 'AttentionRecorder', 'record_attention']
