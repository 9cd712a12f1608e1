"""Placement: app presets, the pure planner, and the linker / HF-cache / Ollama writers."""
