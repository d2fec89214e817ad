"""Built-in plugins, one file each; loaded by path (see zoo.registry.discover)."""
