"""The LightningModule and what shapes its steps: stepping, clipping, schedules, callbacks, selection."""
