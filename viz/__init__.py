"""What people look at beyond the bare world: interaction overlays, figures and videos.

pygame is imported lazily (only when drawing), so importing ``viz`` is cheap and headless-safe.
"""
