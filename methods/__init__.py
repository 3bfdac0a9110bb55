"""Built-in crbench method plugins, importable as ``crbench_methods``.

Each module is self-contained and names its paper. They are registered through the
``crbench.methods`` entry-point group in pyproject.toml, exactly like third-party plugins.
"""
