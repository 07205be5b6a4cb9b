"""Model registry, the built-in demo model and per-family adapters (PixArt, FLUX)."""
