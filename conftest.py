"""Root of the test tree. The scenarios' fixtures come from the harness's pytest plugin (entry point
``zora`` in pyproject.toml, loaded automatically once the project is installed); benchmarks and run
output are never collected as tests."""

collect_ignore = ["bench", "reports", "load"]
