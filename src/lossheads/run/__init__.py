"""One run's life: build, execute, records, its folder and lock, resume, checkpoints, atomic writes, stops."""
