-- The certificate authority's records. Private keys are never here: an
-- issuing CA's key lives in the HSM (object_id); an encryption key pair the
-- service generated for a reader is kept only wrapped under an escrow key.

-- Issuing CAs. state: pending (key made, waiting for its certificate),
-- active, retired (publishes CRLs until its last certificate expires).
CREATE TABLE ca_issuers (
    name         TEXT    PRIMARY KEY,
    state        TEXT    NOT NULL,
    key_type     TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    module       TEXT    NOT NULL,
    object_id    TEXT    NOT NULL,
    public_key   BLOB      NOT NULL,
    certificate  BLOB NOT NULL,
    chain        BLOB NOT NULL,
    not_before   BIGINT  NOT NULL,
    not_after    BIGINT  NOT NULL,
    crl_number   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

-- Every certificate issued. status: valid | revoked.
CREATE TABLE certificates (
    serial             TEXT    PRIMARY KEY,
    issuer             TEXT    NOT NULL,
    profile            TEXT    NOT NULL,
    subject            TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    not_before         BIGINT  NOT NULL,
    not_after          BIGINT  NOT NULL,
    der                BLOB      NOT NULL,
    fingerprint        TEXT    NOT NULL,
    key_type           TEXT    NOT NULL,
    role               TEXT    NOT NULL,
    tenant             TEXT    NOT NULL,
    paired_serial      TEXT    NOT NULL,
    revoked_at         BIGINT  NOT NULL,
    revocation_reason  TEXT    NOT NULL,
    requested_by       TEXT    NOT NULL,
    created_at         BIGINT  NOT NULL
);
CREATE INDEX certificates_issuer_status ON certificates (issuer, status, not_after);
CREATE INDEX certificates_subject ON certificates (subject);
CREATE INDEX certificates_not_after ON certificates (not_after);

-- One-time enrollment tokens: only a SHA-256 of the secret is stored.
CREATE TABLE enrollment_tokens (
    id             TEXT    PRIMARY KEY,
    secret_hash    TEXT    NOT NULL,
    reader_serial  TEXT    NOT NULL,
    profiles       TEXT    NOT NULL,
    issuer         TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    expires_at     BIGINT  NOT NULL,
    used_at        BIGINT  NOT NULL,
    used_for       TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL
);

-- Encryption private keys the service generated, wrapped under an escrow key
-- in the HSM, for recovery under dual control.
CREATE TABLE key_escrow (
    certificate_serial  TEXT    PRIMARY KEY,
    escrow_key          TEXT    NOT NULL,
    mechanism           TEXT    NOT NULL,
    wrapped             BLOB      NOT NULL,
    created_at          BIGINT  NOT NULL
);

-- The current CRL of each issuer.
CREATE TABLE crls (
    issuer       TEXT    PRIMARY KEY,
    number       BIGINT  NOT NULL,
    this_update  BIGINT  NOT NULL,
    next_update  BIGINT  NOT NULL,
    entries      BIGINT  NOT NULL,
    der          BLOB      NOT NULL
);
