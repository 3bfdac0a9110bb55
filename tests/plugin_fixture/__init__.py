"""Files for the plugin tests: two plugin packages and a helper that installs them as real
distributions (a package directory plus ``<name>-<version>.dist-info`` with METADATA and
entry_points.txt, exactly what pip writes) under a temporary directory."""
