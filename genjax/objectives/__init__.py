"""Pure objectives of (params, batch, rng) returning (loss, metrics)."""
