"""One module per ``lam`` verb; each defines ``register(app)``."""
