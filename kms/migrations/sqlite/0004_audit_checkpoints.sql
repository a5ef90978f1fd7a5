-- Signed checkpoints of the audit chain (docs/governance.md, "Audit").
--
-- A checkpoint is the statement "the chain head is at seq N with hash H at
-- time T", signed with an EC P-256 key that never leaves the HSM token.
-- Someone who can write to this database but cannot use the HSM can edit
-- the log and recompute every hash after the edit, or cut off its tail and
-- rewind audit_head; the signed (seq, hash) pairs here are what they cannot
-- recompute. The public key and its fingerprint are stored for exports and
-- auditors' files only: verification trusts the key in the token, never
-- this copy.
CREATE TABLE audit_checkpoints (
    seq             BIGINT PRIMARY KEY,
    head_hash       TEXT   NOT NULL,
    ts_ms           BIGINT NOT NULL,
    algorithm       TEXT   NOT NULL,
    key_label       TEXT   NOT NULL,
    -- SHA-256 (hex) of the signing key's SubjectPublicKeyInfo.
    key_fingerprint TEXT   NOT NULL,
    -- The SubjectPublicKeyInfo, DER as hex.
    public_key      TEXT   NOT NULL,
    -- ECDSA r || s, hex.
    signature       TEXT   NOT NULL
);

-- One row whose update serialises replicas that find no checkpoint key in
-- the token, so that only one of them generates it.
CREATE TABLE audit_checkpoint_key_lock (
    id        INTEGER  PRIMARY KEY CHECK (id = 1),
    locked_at BIGINT   NOT NULL
);
INSERT INTO audit_checkpoint_key_lock (id, locked_at) VALUES (1, 0);

-- QueryAudit's filters, each followed in sequence order (keyset paging).
-- On a large existing log these take a while to build at the first start
-- of this version; appends wait meanwhile.
CREATE INDEX audit_log_principal ON audit_log (principal, seq);
CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
