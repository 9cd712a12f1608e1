"""The resumable, verified, chunked download engine (no CLI, no UI: progress goes through a listener)."""
