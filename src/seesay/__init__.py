"""seesay: see a picture, say the answer — production visual question answering for Qwen3-VL."""

__version__ = "0.1.0"
