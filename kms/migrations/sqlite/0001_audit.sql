-- The hash-chained audit log. `audit_head` holds the chain's head; every
-- append updates it first, which serialises appends (SQLite takes its write
-- lock there), so two writers can never both extend the same head.
CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       BIGINT  NOT NULL,
    head_hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    ts_ms      BIGINT NOT NULL,
    principal  TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    tenant     TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    details    TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts_ms);
