-- Small named values the gateway keeps for itself (src/store/settings.rs): random keys it
-- makes once (base64) and small JSON records, e.g. the fingerprint of the credential it
-- published into Genesys. Never shown by the API. `updated_ms` is epoch milliseconds.
CREATE TABLE gateway_settings (
    name       TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
