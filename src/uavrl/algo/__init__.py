"""Pure functions on tensors: returns, the actor-critic loss, the shared optimizer."""
