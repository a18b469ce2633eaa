"""The field technician's serial console on the unit (`plategate console`) and its client
(`plategate-serial`). See docs/console.md."""
