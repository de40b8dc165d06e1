-- sealpost keystore schema. Written in the SQL subset SQLite and PostgreSQL share, so the
-- same migration runs on both backends. Times are Unix seconds (BIGINT).

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    created       BIGINT NOT NULL,
    -- argon2id PHC string for the static auth mode; NULL when no password is set.
    password_hash TEXT,
    -- JSON object of per-account settings (encryptIncoming, protectSubject, ...).
    settings      TEXT NOT NULL DEFAULT '{}',
    -- Last change number handed out for this account (JMAP states derive from it).
    modseq        BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE addresses (
    local_part  TEXT NOT NULL,
    domain      TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    is_primary  BIGINT NOT NULL,
    PRIMARY KEY (local_part, domain)
);
CREATE INDEX addresses_account ON addresses(account_id);
CREATE INDEX addresses_lower ON addresses(domain, local_part);

CREATE TABLE public_keys (
    fingerprint TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    armored     TEXT NOT NULL,
    user_ids    TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created     BIGINT NOT NULL,
    expires     BIGINT,
    active      BIGINT NOT NULL,
    imported_at BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX public_keys_account ON public_keys(account_id);

-- Every change to a public key, kept after the key itself is removed. The id is the
-- sequence number of the audit row written with the change, so it orders the events.
CREATE TABLE public_key_history (
    id          BIGINT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    event       TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL
);
CREATE INDEX public_key_history_fpr ON public_key_history(fingerprint);

-- Private key metadata; the blob lives in private_key_blobs so listing never loads it.
CREATE TABLE private_keys (
    fingerprint            TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    public_key_fingerprint TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    label                  TEXT,
    protection             TEXT NOT NULL,
    size                   BIGINT NOT NULL,
    created                BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX private_keys_account ON private_keys(account_id);

CREATE TABLE private_key_blobs (
    fingerprint TEXT PRIMARY KEY REFERENCES private_keys(fingerprint) ON DELETE CASCADE,
    armored     TEXT NOT NULL
);

CREATE TABLE officer_keys (
    fingerprint TEXT PRIMARY KEY,
    armored     TEXT NOT NULL,
    user_ids    TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    active      BIGINT NOT NULL,
    added_at    BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE escrows (
    private_key_fingerprint TEXT PRIMARY KEY REFERENCES private_keys(fingerprint) ON DELETE CASCADE,
    account_id              TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    officer_fingerprint     TEXT NOT NULL REFERENCES officer_keys(fingerprint),
    armored                 TEXT NOT NULL,
    created                 BIGINT NOT NULL
);
CREATE INDEX escrows_account ON escrows(account_id);

-- JMAP change log: one row per object change, numbered by the account's modseq.
CREATE TABLE changes (
    account_id  TEXT NOT NULL,
    modseq      BIGINT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    op          TEXT NOT NULL,
    PRIMARY KEY (account_id, modseq, object_type, object_id)
);
CREATE INDEX changes_type ON changes(account_id, object_type, modseq);

-- Append-only, hash-chained audit log. Each row's hash covers its fields and the previous
-- row's hash; audit_head holds the latest sequence number and hash, so deleting the last
-- rows is detected as well. Updating audit_head serialises concurrent writers.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    account    TEXT,
    action     TEXT NOT NULL,
    object     TEXT,
    reason     TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
