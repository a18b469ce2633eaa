"""Read provenance: each read a unit publishes is signed by the unit and, where the policy
says so, sealed to the destination's key (DESIGN.md invariant 9).

`messages` holds the pure functions both ends use (build, sign, seal on the unit; unseal,
verify on the receiver); `keys` loads and creates the keys they need.
"""
