"""The sharing policy as plain, immutable data.

These dataclasses are the contract between the policy engine, the outbox and the
egress gate: parsing and signature checks produce them, `decide()` reads them, and
nothing else interprets a policy. Times are unix seconds (float) so the engine can
stay a pure function of (read, destination, policy, now).
"""
from __future__ import annotations

from dataclasses import dataclass

# Closed vocabularies. A bundle naming anything else is refused at load.
DESTINATION_CLASSES = frozenset({
    "local_police", "state_police", "state_fusion_center", "federal",
    "federal_immigration", "private", "other",
})
PURPOSES = frozenset({
    "stolen_vehicle", "amber_alert", "silver_alert", "felony_warrant",
    "homicide_investigation", "missing_person", "violent_crime_investigation",
    "terrorism_investigation", "traffic_enforcement", "parking_enforcement",
    "immigration_enforcement", "reproductive_health_care", "first_amendment_activity",
    "records_retention",
})
FIELDS = frozenset({
    "plate", "plate_crop", "vehicle_image", "confidence", "timestamp", "camera_id", "location",
})
RULE_MODES = frozenset({"all", "hotlist_hits", "none"})
# Fields a sealed destination may have shown in clear on the envelope (routing metadata for
# its broker): never the plate (clear or hashed), images or hotlist hits.
ROUTING_FIELDS = frozenset({"camera_id", "timestamp", "confidence", "location"})
PLATE_FORMS = frozenset({"clear", "hmac_sha256"})


@dataclass(frozen=True)
class Transport:
    """Where a destination's reads go and how its broker proves who it is."""

    broker_url: str                    # mqtts://host:port or mqtt://host:port
    topic: str                         # from the policy only; never built from plate text
    server_key_sha256: str | None      # hex SHA-256 of the server's SubjectPublicKeyInfo (DER)
    ca_pem: str | None                 # PEM of the CA that must have signed the server cert


@dataclass(frozen=True)
class Sealing:
    """A destination's end-to-end encryption: every read for it is sealed to `public_key`.

    `public_key` is the raw 32-byte X25519 public key of the department (from the signed
    policy); `routing_metadata` are the read fields also shown in clear on the envelope
    (a subset of ROUTING_FIELDS and of the rule's fields), so a broker can route on them.
    """

    public_key: bytes
    routing_metadata: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Declaration:
    """The data-sharing agreement on file for a destination; no sharing past `expires_at`."""

    id: str
    expires_at: float


@dataclass(frozen=True)
class AllowRule:
    id: str
    mode: str                          # one of RULE_MODES
    fields: frozenset[str]             # subset of FIELDS
    plate_form: str = "clear"          # one of PLATE_FORMS
    location_precision_m: float = 0.0  # 0 = as measured; larger = coarser grid
    max_age_s: float | None = None     # a read older than this at send time is not sent


@dataclass(frozen=True)
class Destination:
    id: str
    agency: str
    dest_class: str                    # one of DESTINATION_CLASSES
    jurisdiction: str                  # ISO 3166-2, e.g. "US-CT"
    transport: Transport
    purposes: frozenset[str]
    declaration: Declaration | None
    rule: AllowRule
    sealing: Sealing | None = None     # set: reads are sealed to it, never sent in clear


@dataclass(frozen=True)
class Prohibitions:
    """Overrides every allow rule (deny overrides allow)."""

    classes: frozenset[str]
    purposes: frozenset[str]
    # If non-empty, a destination whose jurisdiction is not listed gets nothing.
    allowed_jurisdictions: frozenset[str]
    # Declarations required (added by the policy issue; optional, default: none required).
    # If non-empty, a destination whose jurisdiction is NOT listed must have an unexpired
    # declaration on file (e.g. Illinois: out-of-state sharing needs a written declaration).
    declaration_required_outside: frozenset[str] = frozenset()
    # Destinations of these classes must have an unexpired declaration on file.
    declaration_required_classes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Retention:
    nonhit_max_age_s: float
    hit_max_age_s: float


@dataclass(frozen=True)
class Policy:
    agency: str
    version: int
    issued_at: float
    not_before: float
    expires_at: float
    signer_key_id: str
    digest: str                        # hex SHA-256 of the signed payload bytes; the gate compares it
    destinations: tuple[Destination, ...]
    prohibitions: Prohibitions
    retention: Retention
    # Every destination must be sealed (e.g. a state law requiring end-to-end encryption):
    # a policy with a destination without `sealing` is refused at parse time.
    require_sealed: bool = False

    def destination(self, destination_id: str) -> Destination | None:
        for dest in self.destinations:
            if dest.id == destination_id:
                return dest
        return None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    fields: frozenset[str]
    rule_id: str                       # the rule or prohibition that made the decision
    reason: str
    # Hit purposes this share is for (allowed decisions only): the read's hotlist purposes
    # that the destination may receive and no prohibition forbids. Hits outside this set
    # are stripped from the payload. Empty for a non-hit read shared under mode "all".
    purposes: frozenset[str] = frozenset()
