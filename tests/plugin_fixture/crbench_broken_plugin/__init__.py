"""A crbench plugin whose import fails (missing dependency), for the registry tests."""

import crbench_missing_dependency_for_tests  # noqa: F401  (fails on purpose)
