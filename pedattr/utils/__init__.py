"""Small helpers every layer may use: atomic file writes (no torch, no other pedattr module)."""
