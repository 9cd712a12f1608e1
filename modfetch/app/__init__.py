"""Application services: what each CLI command does, as plain functions over config, state and the engine."""
