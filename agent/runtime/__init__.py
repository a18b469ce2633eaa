"""Running the agent: stages, supervision, signals and the assembly of the pipeline."""
