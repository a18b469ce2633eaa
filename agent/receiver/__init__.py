"""The department's receiver (`plategate receive`): see docs/receiver.md."""
