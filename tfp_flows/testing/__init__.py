"""Testing utilities: the registry of flow steps that drives the generic property tests."""
