"""Training the demo weights: a procedural world, its captions, and one script per model."""
