"""Image inputs for vision models: load, resize, crop, normalize (`ferrum.vision.image`)."""
