-- The key catalogue: metadata of every key version. Never a key value.
CREATE TABLE keys (
    name        TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    algorithm   TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    kcv_method  TEXT    NOT NULL,
    kcv_value   TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    module      TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX keys_state ON keys (state);

-- Derivation batches: one row per batch id, one per finished card. A retried
-- batch is answered from these rows instead of deriving again. `result` holds
-- the response as sent: KCVs and keys wrapped under the partner's transport
-- key, never a clear key.
CREATE TABLE derivation_batches (
    batch_id     TEXT   PRIMARY KEY,
    principal    TEXT   NOT NULL,
    tenant       TEXT   NOT NULL,
    profile      TEXT   NOT NULL,
    transport    TEXT   NOT NULL,
    pins         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE derivation_items (
    batch_id   TEXT   NOT NULL,
    idx        BIGINT NOT NULL,
    card       TEXT   NOT NULL,
    ok         BIGINT NOT NULL,
    result     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (batch_id, idx)
);
