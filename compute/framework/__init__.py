"""The compute framework: the task protocol, the runner that records runs, the registry
of tasks and the Prefect flows that schedule them. Nothing here knows any science."""
