"""Attacks: one iterative sign-gradient core for pixel and semantic attacks, semantic C&W, and a
gradient-free random-search baseline (DESIGN §7)."""
