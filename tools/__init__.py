"""Developer tools (training, benchmarks, data generation); not installed with the agent."""
