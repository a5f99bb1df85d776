"""What the tests share: running the CLI, making inputs, finding a run's processes, a foreign server, the
launcher suite. Imported as `helpers.<module>` (pyproject puts tests/ on the path); conftest.py holds fixtures."""
