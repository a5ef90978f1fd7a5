-- Partners' production plans (quotas): which cards of which profile a
-- tenant may have derived, how many, and when. `used` is raised in the
-- transaction that records the derivation, by a statement that takes the
-- row's lock first, so the count is exact across concurrent calls and
-- replicas. Times are Unix seconds.
CREATE TABLE production_plans (
    id                TEXT   PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    profile           TEXT   NOT NULL,
    ranges            TEXT   NOT NULL,
    quota             BIGINT NOT NULL,
    used              BIGINT NOT NULL,
    valid_from        BIGINT NOT NULL,
    valid_until       BIGINT NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT   NOT NULL,
    created_by        TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    note              TEXT   NOT NULL
);
CREATE INDEX production_plans_tenant ON production_plans (tenant, profile);
