"""Built-in recipes (YAML), shipped with the package."""
