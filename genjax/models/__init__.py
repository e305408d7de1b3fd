"""Pure Flax Linen models: init/apply only; no optimisers, data or I/O."""
