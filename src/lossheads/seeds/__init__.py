"""Seeds of one configuration trained as one vectorized model (`hydra/launcher=seeds`), each member
leaving the run folder its own run would leave."""
